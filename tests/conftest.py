# tests/ is not a package and the repo root is not on sys.path under `.venv/bin/pytest`,
# but pytest puts this directory on sys.path (rootdir-relative "prepend" import mode).
from kafka_support import *  # noqa: F403
