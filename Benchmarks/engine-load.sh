#!/usr/bin/env bash
# Engine load benchmark on the default model: output tokens/s and time-to-first-token percentiles
# for 1, 8 and 32 concurrent closed-loop clients (2 requests each, 64 tokens per request).
# The concurrency-1 row is the anchor the others are read against.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product pagoda >/dev/null
.build/release/pagoda bench load --concurrency "${CONCURRENCY:-1,8,32}" --max-tokens "${MAX_TOKENS:-64}" "$@"
