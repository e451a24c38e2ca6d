# Sourced by the tests/cli_*.sh tests (not a test itself): `cli_test_setup NAME` sets bin (the gptoss
# binary), tmp (a fresh $GPTOSS_TMP/NAME) and fail=0, and defines check DESCRIPTION COMMAND... (the command
# must succeed, else a FAIL line and fail=1).
cli_test_setup() {
    bin=${GPTOSS_BIN:?GPTOSS_BIN must name the gptoss binary}
    tmp=${GPTOSS_TMP:-/tmp}/$1
    rm -rf "$tmp" && mkdir -p "$tmp"
    fail=0
}
check() { # check DESCRIPTION COMMAND...: the command must succeed
    if ! "${@:2}"; then echo "FAIL: $1" >&2; fail=1; fi
}
