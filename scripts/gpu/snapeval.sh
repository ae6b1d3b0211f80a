#!/bin/bash
# snapeval.sh RUN TAG: evaluate each new saved state of RUN (n 5000, seed $SEED or 3000) on
# the GPU, keeping its weights in /tmp/m/TAG-IMAGES and its metrics in /tmp/evals/TAG-IMAGES.json
RUN=$1; TAG=$2; last=""
while true; do
  f=$RUN/sceneworld_generator.safetensors
  if [ -f "$f" ]; then
    cp "$f" "/tmp/snap-$TAG.tmp"
    n=$(python3 -c "from safetensors import safe_open; print(safe_open('/tmp/snap-$TAG.tmp', 'pt').metadata()['images_seen'])" 2>/dev/null)
    if [ -n "$n" ] && [ "$n" != "$last" ]; then
      last=$n; d=/tmp/m/$TAG-$n; mkdir -p "$d"
      mv "/tmp/snap-$TAG.tmp" "$d/sceneworld_generator.safetensors"
      ln -sf /tmp/models/sceneworld_segmenter.safetensors /tmp/models/sceneworld_classifier.safetensors "$d/"
      t0=$(date +%s)
      GANDISSECT_MODELS=$d python3 -m gandissect eval generator --n 5000 --seed "${SEED:-3000}" \
        --device cuda --json --quiet > "/tmp/evals/$TAG-$n.json" 2> "/tmp/evals/$TAG-$n.err"
      echo "$TAG $n eval $(( $(date +%s) - t0 )) s"
    fi
  fi
  sleep 5
done
