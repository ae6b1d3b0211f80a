#!/bin/bash
# start.sh: run A continues carry/checkpoint.pt and run B branches from it with the texture
# critic; or, with CONFIG_A and CONFIG_B set (files in scripts/gpu/configs/), two new runs
# from scratch; or, with FROM_WEIGHTS=1, two runs from the shipped generator's weights with
# fresh critics, B with the semantic critic. Starts the evaluators and prints the state after
# WAIT tens of seconds.
set -u
export PYTHONUNBUFFERED=1
nvidia-smi -L; nproc
rm -rf /tmp/repo; cp -r "$PWD" /tmp/repo; cd /tmp/repo; export PYTHONPATH=/tmp/repo
python3 -c "import torch, safetensors, skimage, tqdm, PIL; print(torch.__version__, torch.cuda.is_available())" || exit 1
mkdir -p /tmp/models /tmp/m /tmp/evals
cp models/sceneworld_segmenter.safetensors models/sceneworld_classifier.safetensors /tmp/models/
train="python3 -m gandissect train generator --device cuda --workers ${WORKERS:-6} --kimg 3000 --checkpoint-minutes 1.5"
if [ -n "${FROM_WEIGHTS:-}" ]; then
  a=(--from-weights models/sceneworld_generator.safetensors); b=("${a[@]}" --semantic)
elif [ -n "${CONFIG_A:-}" ]; then
  a=(--config "scripts/gpu/configs/$CONFIG_A"); b=(--config "scripts/gpu/configs/$CONFIG_B")
else
  mkdir -p /tmp/A /tmp/Bsrc; cp carry/checkpoint.pt /tmp/A/; cp carry/checkpoint.pt /tmp/Bsrc/
  a=(); b=(--branch /tmp/Bsrc --patch)
fi
setsid nohup $train --run /tmp/A "${a[@]}" > /tmp/trainA.log 2>&1 < /dev/null &
setsid nohup $train --run /tmp/B "${b[@]}" > /tmp/trainB.log 2>&1 < /dev/null &
sleep 20
setsid nohup bash scripts/gpu/snapeval.sh /tmp/A A > /tmp/evalA.log 2>&1 < /dev/null &
setsid nohup bash scripts/gpu/snapeval.sh /tmp/B B > /tmp/evalB.log 2>&1 < /dev/null &
for i in $(seq 1 "${WAIT:-50}"); do
  sleep 10
  if ! pgrep -f "run /tmp/A" > /dev/null || ! pgrep -f "run /tmp/B" > /dev/null; then
    echo "a training died"; tail -30 /tmp/trainA.log /tmp/trainB.log; break
  fi
  [ "$i" = 6 ] && bash scripts/gpu/status.sh
done
bash scripts/gpu/status.sh
