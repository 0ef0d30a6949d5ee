#!/usr/bin/python3
"""Reads the JSON that curl printed (stdin) for run_e2e.sh; stdlib only.

api.py field NAME            print body[NAME]
api.py completed-per-job     print "JOB_NAME COUNT" of COMPLETE tries per job (a /log body)
"""

import collections
import json
import sys

body = json.load(sys.stdin)
if sys.argv[1] == "field":
    print(body[sys.argv[2]])
elif sys.argv[1] == "completed-per-job":
    counts = collections.Counter(row["name"] for row in body if row.get("state") == "COMPLETE")
    for name, n in sorted(counts.items()):
        print(name, n)
else:
    sys.exit(f"unknown command {sys.argv[1]}")
