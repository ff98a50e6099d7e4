#!/bin/sh
# multipart=stream: says what it started with, then the SHA-256 of stdin, then the later files.
echo "started field=$Http_Form_File_Field name=$Http_Form_File_Name" \
    "type=$Http_Form_File_Content_Type title=$Http_Form_title after=${Http_Form_after-unset}"
echo "content_length=${CONTENT_LENGTH-unset}"
echo "stdin $(sha256sum | cut -d ' ' -f 1)"
cd "$Http_Form_Dir" || exit 1
for name in *; do
    [ -e "$name" ] && echo "file $name $(sha256sum < "$name" | cut -d ' ' -f 1)"
done
echo "$Http_Form_Dir" > "$TMPDIR/form-dir-seen"
