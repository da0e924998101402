#!/usr/bin/env bash
# Installs the Debian package holding real Fashion-MNIST when its files are missing.
set -euo pipefail
dir=/usr/share/datasets/fashion-mnist
if [ -f "$dir/train-images-idx3-ubyte.gz" ] && [ -f "$dir/t10k-labels-idx1-ubyte.gz" ]; then
  exit 0
fi
echo "Fashion-MNIST not found in $dir; installing Debian package dataset-fashion-mnist ..."
sudo_cmd=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo_cmd="sudo"; fi
fi
if ! { $sudo_cmd apt-get update -qq && $sudo_cmd apt-get install -y -qq dataset-fashion-mnist; }; then
  cat >&2 <<MSG
ERROR: could not install the Debian package 'dataset-fashion-mnist'.
tfcompress reads Fashion-MNIST offline from $dir.
Install it as root:   apt-get update && apt-get install -y dataset-fashion-mnist
or point TFCOMPRESS_DATA_DIR at a folder holding the four *-ubyte.gz files.
MSG
  exit 1
fi
