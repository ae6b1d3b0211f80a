#!/bin/bash
# finish.sh: train TRAIN s more, stop both runs (they save), wait for the evaluations, and
# write to $OUT the evaluations, slim checkpoints (split under 16 MB), a sample sheet and the
# two best states: those meeting every bar but brick, closest to brick's ratio of 1
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/repo
cd /tmp/repo
sleep "${TRAIN:-200}"
pkill -TERM -f "train generator"; sleep 2
for i in $(seq 1 60); do pgrep -f "train generator" > /dev/null || break; sleep 2; done
echo "stopped: $(tail -1 /tmp/A/log.jsonl) $(tail -1 /tmp/B/log.jsonl)"
sleep 8  # the evaluators pick up the final states
for i in $(seq 1 "${EVALWAIT:-30}"); do
  pgrep -f "eval generator" > /dev/null || break; sleep 10
done
pkill -f snapeval.sh
bash scripts/gpu/status.sh
for r in A B; do
  python3 -m gandissect train generator --run /tmp/$r --slim /tmp/$r-slim.pt &&
    split -b 10M /tmp/$r-slim.pt "$OUT/$r-slim.part-"
done
cp /tmp/A/samples.png "$OUT/A-samples.png"
python3 - <<'PY'
import glob, json, os, shutil, tarfile
out = os.environ["OUT"]
with tarfile.open(f"{out}/evals.tgz", "w:gz") as tar:
    for path in glob.glob("/tmp/evals/*"):
        tar.add(path, arcname=os.path.basename(path))
    for run in ("A", "B"):
        tar.add(f"/tmp/{run}/log.jsonl", arcname=f"{run}-log.jsonl")
ranked = []
for path in glob.glob("/tmp/evals/*.json"):
    try:
        r = json.load(open(path))
    except ValueError:
        continue
    ratios = r["concept_freq_ratio"]
    rest = (r["object_freq_tv"] <= 0.05 and r["scene_hist_tv"] <= 0.10
            and r["precision"] >= 0.70 and r["recall"] >= 0.50
            and all(1 / 1.5 <= v <= 1.5 for k, v in ratios.items() if k != "brick"))
    ranked.append((not rest, abs(ratios["brick"] - 1), os.path.basename(path)[:-5]))
ranked.sort()
print("ranked:", ranked[:6])
for _, _, tag in ranked[:2]:
    shutil.copy(f"/tmp/m/{tag}/sceneworld_generator.safetensors", f"{out}/gen-{tag}.safetensors")
PY
ls -la "$OUT"
