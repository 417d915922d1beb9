"""`python -m healer.train RUN_ID [RUN_ID ...]`: execute runs in this process, one after another (the worker and
`healer run` start one; the worker hands several evaluation jobs to one process, which loads torch once)."""

import sys

from healer.train.child import main

sys.exit(main([int(a) for a in sys.argv[1:]]))
