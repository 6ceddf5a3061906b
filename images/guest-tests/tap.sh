# Sourced by the guest test scripts that print TAP. check DESC CMD...: runs CMD, prints "ok N - DESC" or
# "not ok N - DESC" followed by CMD's output (kept in /tmp/check.out either way), and counts failures
# in $failed. The script ends with: echo "1..$n"; exit $failed
n=0
failed=0

check() {
	n=$((n + 1))
	desc=$1
	shift
	if "$@" >/tmp/check.out 2>&1; then
		echo "ok $n - $desc"
	else
		echo "not ok $n - $desc"
		sed 's/^/#   /' /tmp/check.out
		failed=$((failed + 1))
	fi
}
