import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # flat modules at the repo root
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
