#!/usr/bin/env python3
"""Hashes the files of an uploaded form; run by fwatchdog with multipart=true:

    mode=streaming multipart=true content_type="text/plain; charset=utf-8" \\
        fprocess="python3 examples/multipart_upload/hash.py" fwatchdog

The watchdog has already decoded the form: the text field `title` is in $Http_Form_title, the
files are in $Http_Form_Dir, listed in $Http_Form_Files (field, saved name, content type,
original filename; tab-separated, one per line). The directory is removed after the request.
"""

import hashlib
import os

env = dict(os.environ)  # Http_* names are mixed case
print(f"title: {env.get('Http_Form_title', '')}")
for line in env.get("Http_Form_Files", "").splitlines():
    field, saved, content_type, original = line.split("\t")
    digest = hashlib.sha256()
    size = 0
    with open(os.path.join(env["Http_Form_Dir"], saved), "rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
            size += len(block)
    print(f"{field}: {original} ({content_type}, {size} bytes) sha256={digest.hexdigest()}")
