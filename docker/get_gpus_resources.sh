#!/usr/bin/env bash
# Spark GPU discovery script (spark.{driver,executor,worker}.resource.gpu.discoveryScript).
# Prints the GPUs this container/host can use as Spark's ResourceInformation JSON:
#   {"name": "gpu", "addresses": ["0", "1"]}
# Addresses are CUDA ordinals as the process sees them (what torch.device("cuda:N") takes).
# Without nvidia-smi, or when it fails (no driver), it prints an empty address list and says why
# on stderr, so Spark reports "not enough gpu" instead of failing to parse the output.
set -u
name="${SPARK_RESOURCE_NAME:-gpu}"
addresses=""
if command -v nvidia-smi >/dev/null 2>&1; then
  if out="$(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null)"; then
    for idx in $out; do
      case "$idx" in
        ''|*[!0-9]*) ;;  # skip anything that is not an ordinal
        *) addresses="${addresses:+$addresses, }\"$idx\"" ;;
      esac
    done
  else
    echo "get_gpus_resources: nvidia-smi failed (no NVIDIA driver?); reporting no GPUs" >&2
  fi
else
  echo "get_gpus_resources: nvidia-smi not found; reporting no GPUs" >&2
fi
printf '{"name": "%s", "addresses": [%s]}\n' "$name" "$addresses"
