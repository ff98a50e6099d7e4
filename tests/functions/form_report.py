#!/usr/bin/env python3
"""multipart=true: prints, as JSON, what the function sees of a form.

`env`: every Http_Form_* variable and CONTENT_LENGTH; `files`: each file in $Http_Form_Dir with
its size and SHA-256; `stdin`: how many bytes stdin held. It records $Http_Form_Dir in
$TMPDIR/form-dir-seen. With the header X-Exit, it exits at once with that status, printing
nothing; with X-Sleep, it sleeps that many seconds first.
"""

import hashlib
import json
import os
import sys
import time

env = dict(os.environ)  # the Go-style names are mixed case
form_dir = env.get("Http_Form_Dir", "")
seen_path = os.path.join(env["TMPDIR"], "form-dir-seen")
if env.get("Http_X_Sleep"):
    with open(seen_path, "w") as seen:
        seen.write(form_dir)
    time.sleep(float(env["Http_X_Sleep"]))
if env.get("Http_X_Exit"):
    with open(seen_path, "w") as seen:
        seen.write(form_dir)
    sys.exit(int(env["Http_X_Exit"]))
files = {}
if form_dir:
    for name in sorted(os.listdir(form_dir)):
        digest = hashlib.sha256()
        size = 0
        with open(os.path.join(form_dir, name), "rb") as file:
            while block := file.read(1 << 20):
                digest.update(block)
                size += len(block)
        files[name] = {"size": size, "sha256": digest.hexdigest()}
report = {
    "env": {k: v for k, v in env.items() if k.startswith("Http_Form_") or k == "CONTENT_LENGTH"},
    "files": files,
    "stdin": len(sys.stdin.buffer.read()),
}
with open(seen_path, "w") as seen:
    seen.write(form_dir)
print(json.dumps(report))
