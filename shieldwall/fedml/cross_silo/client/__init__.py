"""FedML's ``fedml.cross_silo.client`` (the launcher of a silo's trainers)."""
