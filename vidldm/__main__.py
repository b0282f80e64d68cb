"""`python -m vidldm ...` (also what `accelerate launch -m vidldm` runs)."""

import sys

from vidldm.cli import main

sys.exit(main())
