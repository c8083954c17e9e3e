#!/usr/bin/env bash
# Regenerates the early-media prompts under deploy/prompts/ from free tools only:
# espeak-ng (Mandarin voice "cmn") for speech and sox for the comfort tone and the conversion to
# 8 kHz mono A-law WAV (8 KB a second). No recordings of anyone, nothing copyrighted.
#
#   apt-get install -y espeak-ng sox     # Debian / Ubuntu
#   scripts/make-prompts.sh [out-dir]    # default: deploy/prompts
#
# The files are committed; the daemon and the tests read them, so CI does not need these tools.
# Tibetan (bo/): espeak-ng has no Tibetan voice, so nothing is synthesised for it. See
# deploy/prompts/README.md for the fallback and for how to add real recordings.
set -euo pipefail

out="${1:-$(dirname "$0")/../deploy/prompts}"
mkdir -p "$out/cmn" "$out/bo"
for tool in espeak-ng sox; do
    command -v "$tool" >/dev/null || { echo "make-prompts: $tool is missing (apt-get install -y espeak-ng sox)" >&2; exit 1; }
done
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# 8 kHz mono A-law, level normalised, leading/trailing silence trimmed, a short pause after.
say() { # name pause_s text
    local name="$1" pause="$2" text="$3"
    espeak-ng -v cmn -s 150 -w "$tmp/$name.wav" "$text"
    sox "$tmp/$name.wav" -r 8000 -c 1 -e a-law "$out/cmn/$name.wav" \
        silence 1 0.02 0.5% reverse silence 1 0.02 0.5% reverse \
        norm -3 pad 0 "$pause"
}

say joined          0.4  "您拨打的号码已并入一二三四五政务服务便民热线。"
say position_before 0.05 "您现在排在第"
say position_after  0.6  "位，请耐心等待。"
i=0
for w in 零 一 二 三 四 五 六 七 八 九; do
    say "digit_$i" 0.03 "$w"
    i=$((i + 1))
done
say ten      0.03 "十"
say hundred  0.03 "百"
say thousand 0.03 "千"
say liang    0.03 "两"

# Comfort tone: two soft notes (E5, C5) then silence, 3 s, looped while the caller waits.
sox -n -r 8000 -c 1 -b 16 "$tmp/n1.wav" synth 0.35 sine 659.25 fade q 0.02 0.35 0.15 vol 0.2
sox -n -r 8000 -c 1 -b 16 "$tmp/n2.wav" synth 0.5 sine 523.25 fade q 0.02 0.5 0.3 vol 0.2
sox "$tmp/n1.wav" "$tmp/n2.wav" -e a-law "$out/cmn/comfort.wav" pad 0 2.15

ls -l "$out/cmn"
