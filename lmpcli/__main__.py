"""``python -m lmpcli`` runs the ``lmp`` command line (for launchers such as ``torchrun -m lmpcli``)."""

from .cli import main

main()
