// Package repocheck holds tests that keep the repository's build files and documents
// true to the code: every fuzzer runs in `make fuzz`, every package is in the README's
// layout. It has no code of its own.
package repocheck
