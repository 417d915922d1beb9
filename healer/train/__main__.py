"""`python -m healer.train RUN_ID`: execute one run in this process (the worker and `healer run` start it)."""

import sys

from healer.train.child import main

sys.exit(main(int(sys.argv[1])))
