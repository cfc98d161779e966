"""``python -m shieldwall`` (also what ``torchrun -m shieldwall`` runs)."""

from shieldwall.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
