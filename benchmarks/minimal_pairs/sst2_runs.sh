#!/usr/bin/env bash
# Issue 12's check: gpt, bert, hybrid and lstm runs made from the pretraining templates on the text of
# SST-2's training split (word pieces, vocabulary 8000, lowercase, 4 x 256, context 64, batch 32,
# 1,500 steps), then judged zero-shot on the package's English minimal pairs.
#   bash benchmarks/minimal_pairs/sst2_runs.sh [OUT_ROOT]      (from the repository root, after make install)
set -euo pipefail
ROOT=${1:-experiments/minimal_pairs}
DATA=../shared/data/sst2/train.tsv
FOUNDRY=.venv/bin/foundry
COMMON=(--set data.train.path=$DATA --set data.text_column=sentence --set tokenizer.type=wordpiece
        --set tokenizer.vocab_size=8000 --set tokenizer.lowercase=true --set model.n_layer=4 --set model.n_head=4
        --set model.n_embd=256 --set model.block_size=64 --set training.batch_size=32 --set training.max_steps=1500)
for arch in ${ARCHS:-gpt bert hybrid lstm}; do
  name=sst2_$arch
  [ -f "$ROOT/pretraining/$name/config.yaml" ] || $FOUNDRY new pretraining $name --arch $arch --root "$ROOT"
  extra=()
  [ "$arch" = lstm ] && extra=(--set model.n_head=null --set model.hidden_size=256)
  [ -f "$ROOT/pretraining/$name/results.json" ] || /usr/bin/time -f "$name: %e s" \
    $FOUNDRY train "$ROOT/pretraining/$name/config.yaml" "${COMMON[@]}" "${extra[@]}"
  /usr/bin/time -f "$name pairs: %e s" $FOUNDRY eval "$ROOT/pretraining/$name" --minimal-pairs builtin \
    --json "$ROOT/$name.pairs.json"
  if [ "$arch" = hybrid ]; then
    /usr/bin/time -f "$name pairs (mlm): %e s" $FOUNDRY eval "$ROOT/pretraining/$name" --minimal-pairs builtin \
      --objective mlm --json "$ROOT/$name.mlm.pairs.json"
  fi
done
