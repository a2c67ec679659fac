package hub

import (
	"html/template"
	"net/http"
	"time"
)

// Status serves the status page: providers, services and runs, read
// only, for a browser (no key needed: serve it where only operators
// reach it).
func (h *Hub) Status() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		ps, err1 := h.st.providers(ctx)
		ss, err2 := h.st.services(ctx)
		rs, err3 := h.st.runs(ctx)
		for _, err := range []error{err1, err2, err3} {
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		page.Execute(w, map[string]any{"Hub": h.ID(), "Now": time.Now(), "Providers": ps, "Services": ss, "Runs": rs})
	})
	// A run's log verdict, for the link to where its replicas diverged.
	mux.Handle("GET /v1/streams/{stream}/verdict", h.LogAPI)
	mux.Handle("GET /v1/streams/{stream}/checkpoints", h.LogAPI)
	return mux
}

var page = template.Must(template.New("status").Funcs(template.FuncMap{
	"live": func(p Provider, now time.Time) bool { return p.live(now) },
	"ago":  func(t, now time.Time) string { return now.Sub(t).Round(time.Second).String() },
	"short": func(s string, n int) string {
		if len(s) <= n {
			return s
		}
		return s[:n] + "…"
	},
}).Parse(`<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Lockstep hub</title>
<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:2em}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}.bad{color:#b00}.ok{color:#070}</style>
</head><body>
<h1>Lockstep hub</h1>
<p>Hub key <code id="hub">{{.Hub}}</code></p>
<h2>Providers</h2>
<table id="providers"><tr><th>name</th><th>address</th><th>key</th><th>state</th><th>replicas running</th><th>cannot make deterministic</th></tr>
{{range .Providers}}<tr><td>{{.Name}}</td><td>{{.Addr}}</td><td><code>{{short .ID 12}}</code></td>
<td>{{if live . $.Now}}<span class="ok">live</span>{{else}}<span class="bad">silent for {{ago .Seen $.Now}}</span>{{end}}</td>
<td>{{.Running}}</td><td>{{range .Leaks}}{{.}} {{end}}</td></tr>
{{end}}</table>
<h2>Services</h2>
<table id="services"><tr><th>name</th><th>replicas</th><th>image</th><th>digest</th><th>command</th><th>egress</th><th>owner</th></tr>
{{range .Services}}<tr><td>{{.Name}}</td><td>{{.Replicas}}</td><td>{{.Image}}</td><td><code>{{short .Digest 19}}</code></td>
<td><code>{{range .Args}}{{.}} {{end}}</code></td><td>{{if .AllowNet}}{{.AllowNet}}{{else}}none{{end}}</td><td><code>{{short .Owner 12}}</code></td></tr>
{{end}}</table>
<h2>Runs</h2>
<table id="runs"><tr><th>stream</th><th>service</th><th>started</th><th>providers</th><th>in</th><th>out</th><th>verdict</th></tr>
{{range .Runs}}<tr><td><code>{{.Stream}}</code></td><td>{{.Service}}</td><td>{{.Started.UTC.Format "2006-01-02 15:04:05"}}</td>
<td>{{range .Providers}}{{.}} {{end}}</td><td>{{.In}}</td><td>{{.Out}}</td>
<td class="{{if eq .State "agreed" "running"}}ok{{else}}bad{{end}}">{{.State}}{{if .Detail}}: {{.Detail}}{{end}}
{{if not (eq .State "agreed" "running" "cancelled" "failed")}} (<a href="/v1/streams/{{.Stream}}/verdict?replicas={{len .Providers}}">{{if .Divergence}}first differing checkpoint: log size {{.Divergence}}{{else}}the replicas' signed reports{{end}}</a>){{end}}</td></tr>
{{end}}</table>
</body></html>
`))
