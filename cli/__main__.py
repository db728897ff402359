import sys

from tritonize.cli import main

sys.exit(main())
