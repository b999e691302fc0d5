# Shared by fuzz/seeds.sh and fuzz/campaign.sh (sourced, not run): where cargo fuzz puts
# the targets, how to build them, and how to turn a target's options file into libFuzzer
# flags. Expects to run in the fuzz/ directory.

# The host triple cargo fuzz builds for (its default --target).
fuzz_triple() {
  rustc -vV | sed -n 's/^host: //p'
}

# The built binary of target $1.
fuzz_binary() {
  echo "target/$(fuzz_triple)/release/$1"
}

# Every target (the [[bin]] entries of Cargo.toml), or fails.
fuzz_targets() {
  command -v cargo-fuzz >/dev/null || {
    echo "error: cargo-fuzz is missing: cargo install cargo-fuzz --version ^0.13 --locked" >&2
    return 1
  }
  cargo fuzz list
}

# Builds every target without sanitizers (stable Rust). One build for all: they share the
# dependencies, and cargo rebuilds only what changed.
fuzz_build() {
  cargo fuzz build --sanitizer none
}

# libFuzzer flags from options/$1.options ("key = value" lines under [libfuzzer], as
# ClusterFuzz reads them), one per line. A dictionary that does not exist is left out.
fuzz_options() {
  local file="options/$1.options" key value
  [ -f "$file" ] || return 0
  awk '/^\[/ { in_section = ($0 == "[libfuzzer]"); next }
       in_section && /^[a-z_]+[ \t]*=/ { sub(/[ \t]*=[ \t]*/, "="); print }' "$file" |
    while IFS='=' read -r key value; do
      if [ "$key" = dict ] && [ ! -f "$value" ]; then
        continue
      fi
      printf -- '-%s=%s\n' "$key" "$value"
    done
}
