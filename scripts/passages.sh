# Passage-range helper for the bash drivers (sourced, not run).

# expand_passages SPEC: "0-4", "0,2,5-7" or "0 2 5" -> "0 1 2 3 4" (one id per word).
expand_passages() {
  local part ids=()
  for part in ${1//,/ }; do
    if [[ "$part" =~ ^([0-9]+)-([0-9]+)$ ]]; then
      ids+=($(seq "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"))
    elif [[ "$part" =~ ^[0-9]+$ ]]; then
      ids+=("$part")
    else
      echo "bad passage list '$1': use N, N-M or a comma list such as 0,2,5-7" >&2
      return 1
    fi
  done
  echo "${ids[*]}"
}
