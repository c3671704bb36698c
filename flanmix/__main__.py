import sys

from flanmix.cli import main

sys.exit(main())
