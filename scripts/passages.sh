# Passage-range helpers for the bash drivers (sourced, not run).

PASSAGE_IDS_RE='^[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*$'

# expand_ids "0,2-3" -> "0 2 3"; exits with a message on anything else.
expand_ids() {
  local spec="$1" part out=()
  [[ "$spec" =~ $PASSAGE_IDS_RE ]] || { echo "passage ids must be N, N-M or a comma list such as 0,2,5-7; got '$spec'" >&2; exit 2; }
  for part in ${spec//,/ }; do
    if [[ "$part" == *-* ]]; then out+=($(seq "${part%-*}" "${part#*-}")); else out+=("$part"); fi
  done
  echo "${out[@]}"
}
