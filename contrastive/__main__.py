import sys

from contrastive.cli import main

sys.exit(main())
