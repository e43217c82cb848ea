// Package docs holds ssehub's documentation, as Markdown pages. It has no
// code: its test runs every command that README.md and the pages show (see
// docs_test.go for how a page is run).
package docs
