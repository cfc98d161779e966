"""FedML's ``CrossSiloLauncher``, as its ``client_dist_launcher.py`` uses it::

    from fedml.cross_silo.client.client_launcher import CrossSiloLauncher
    CrossSiloLauncher.launch_dist_trainers("torch_client.py", sys.argv[1:])

For a hierarchical silo it runs the client script under torchrun (``python -m
torch.distributed.run``) with the silo's ``n_node_in_silo``, ``n_proc_per_node``,
``node_rank_in_silo`` and the process-group master ``pg_master_address:pg_master_port + i``
(``i``: the silo's position in ``client_id_list``, so silos on one host do not collide); a
horizontal client runs the script once.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence

__all__ = ["CrossSiloLauncher"]


class CrossSiloLauncher:
    @staticmethod
    def launch_dist_trainers(torch_client_filename: str, inputs: Sequence[str]) -> int:
        from shieldwall.fedml.arguments import load_args
        from shieldwall.runtime.net.node import silo_layout

        args = load_args(list(inputs))
        cfg = args.config()
        cmd = [sys.executable, torch_client_filename, *inputs]
        if str(cfg.common_args.scenario).lower() == "hierarchical":
            s = cfg.client_silo_args
            _, address, port = silo_layout(cfg, int(args.rank))
            cmd = [sys.executable, "-m", "torch.distributed.run",
                   f"--nnodes={s.n_node_in_silo}", f"--nproc_per_node={s.n_proc_per_node}",
                   f"--node_rank={s.node_rank_in_silo}", f"--master_addr={address}",
                   f"--master_port={port}", torch_client_filename, *inputs]
        code = subprocess.run(cmd).returncode
        if code:
            sys.exit(code)
        return code
