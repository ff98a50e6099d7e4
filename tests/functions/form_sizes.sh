#!/bin/sh
# multipart=true: the size of each file in $Http_Form_Dir (wc -c on a regular file only stats it).
cd "$Http_Form_Dir" && wc -c -- *
