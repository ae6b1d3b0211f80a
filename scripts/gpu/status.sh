#!/bin/bash
# status.sh: both runs' last log line and progress, the evaluators, the GPU, every evaluation
for r in A B; do
  echo "== $r: $(tail -1 /tmp/$r/log.jsonl 2>/dev/null)"
  tail -c 400 /tmp/train$r.log | tr '\r' '\n' | tail -2
  tail -2 /tmp/eval$r.log
done
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader; uptime
python3 - <<'PY'
import glob, json, os
for path in sorted(glob.glob("/tmp/evals/*.json")):
    try:
        r = json.load(open(path))
    except ValueError:
        print("unfinished or failed:", os.path.basename(path))
        continue
    ratios = " ".join(f"{k} {v:.2f}" for k, v in r["concept_freq_ratio"].items())
    print(f"{os.path.basename(path)[:-5]:10s} seed {r['seed']} oTV {r['object_freq_tv']:.3f} "
          f"sTV {r['scene_hist_tv']:.3f} P {r['precision']:.3f} R {r['recall']:.3f} "
          f"FD {r['fd']:.2f}/{r['fd_real_real']:.2f} {ratios}")
PY
