import sys

from node.worker_main import main

sys.exit(main())
