#!/bin/sh
# Points this checkout's DVC at the deployment's bucket: remote `stack`, made the default, at
# $VIMOGEN_DVC_REMOTE_URL (e.g. s3://vimogen-dvc/store) on the S3 endpoint $AWS_ENDPOINT_URL (unset:
# AWS itself). Written to .dvc/config.local, which git ignores: URLs stay in the environment, and the
# credentials are the usual AWS_* variables, read by DVC at push/pull time, never written anywhere.
# Run from the repository root after `source <stack>/stack.env`; then `dvc push` / `dvc pull`.
set -eu
dvc=${DVC:-dvc}
"$dvc" remote add --local --force --default stack "${VIMOGEN_DVC_REMOTE_URL:?set VIMOGEN_DVC_REMOTE_URL, e.g. s3://vimogen-dvc/store}"
if [ -n "${AWS_ENDPOINT_URL:-}" ]; then
    "$dvc" remote modify --local stack endpointurl "$AWS_ENDPOINT_URL"
fi
"$dvc" remote list --local
