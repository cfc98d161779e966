"""FedML's ``fedml.data.MNIST`` helpers (see :mod:`.data_loader`)."""
