// Package web is the browser side of Herald, embedded in the binary: the
// JavaScript device client served at /client.js (a plain ES module, no build
// step), the demo page at /demo and the console at /console/ (plain ES
// modules too, which call the public API). It is a leaf: it imports nothing
// of Herald's.
package web

import (
	"bytes"
	"embed"
	"html/template"
	"io/fs"
	"net/http"
)

//go:embed client.js demo.html console
var files embed.FS

// Register adds GET /client.js, GET /demo and GET /console/ to mux. defaultAppKey is put in
// the demo page for when its URL names no app (?app_key=); an app key is
// public, so showing it is harmless.
func Register(mux *http.ServeMux, defaultAppKey string) {
	client, _ := files.ReadFile("client.js")
	mux.HandleFunc("GET /client.js", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache")
		// Pages of other origins import the module to use this server.
		w.Header().Set("Access-Control-Allow-Origin", "*")
		w.Write(client)
	})
	// The page is rendered once: its only variable is fixed for the
	// server's life.
	demo := template.Must(template.ParseFS(files, "demo.html"))
	var page bytes.Buffer
	if err := demo.Execute(&page, struct{ AppKey string }{defaultAppKey}); err != nil {
		panic(err) // the embedded template and its one string field always render
	}
	mux.HandleFunc("GET /demo", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache")
		w.Write(page.Bytes())
	})
	registerConsole(mux)
}

// consolePolicy keeps the console's page to its own files and its own
// origin: it holds an admin token or a master secret, so nothing else may
// run in it, frame it or learn where it was.
const consolePolicy = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

func registerConsole(mux *http.ServeMux) {
	sub, err := fs.Sub(files, "console")
	if err != nil {
		panic(err) // the directory is embedded above
	}
	files := http.StripPrefix("/console/", http.FileServerFS(sub))
	mux.HandleFunc("GET /console/", func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Cache-Control", "no-cache")
		h.Set("Content-Security-Policy", consolePolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		files.ServeHTTP(w, r)
	})
}
