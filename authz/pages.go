package authz

import (
	"html/template"
	"net/http"

	"go.uber.org/zap"
)

// The pages are plain HTML forms: they work without JavaScript, carry no
// script at all, and may never be framed.
var pages = template.Must(template.New("layout").Parse(`{{define "top"}}<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}}</title>
<style>
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:36rem;margin:2rem auto;padding:0 1rem;color:#1b1b1b;line-height:1.5}
h1{font-size:1.4rem}
fieldset{border:1px solid #bbb;border-radius:.4rem;margin:1rem 0;padding:.5rem 1rem}
legend{font-weight:600}
label{display:block;margin:.4rem 0}
.note{color:#555;font-size:.9rem}
.error{color:#a00000;font-weight:600}
.record{background:#f3f6fa;border-radius:.4rem;padding:.5rem 1rem}
button{font-size:1rem;padding:.5rem 1.2rem;margin:.5rem .5rem .5rem 0;border-radius:.3rem;border:1px solid #345;cursor:pointer}
button.primary{background:#1d4e89;color:#fff}
input[type=text]{font-size:1rem;padding:.3rem;width:100%;box-sizing:border-box}
:focus{outline:3px solid #f2a900}
</style>
</head>
<body>
<main>
{{end}}
{{define "bottom"}}</main>
</body>
</html>
{{end}}
{{define "login"}}{{template "top" .}}
<h1>Sign in</h1>
<p><strong>{{.AppName}}</strong> wants to connect to a health record. Sign in to continue.</p>
{{if .Error}}<p class="error" role="alert">{{.Error}}</p>{{end}}
<form method="post" action="{{.Action}}">
<input type="hidden" name="request" value="{{.Request}}">
<input type="hidden" name="csrf" value="{{.CSRF}}">
<label for="username">Development account (user name)</label>
<input type="text" id="username" name="username" autocomplete="username" required autofocus>
<p class="note">Development accounts exist on localhost only: the name is the account, as with <code>pfr token --sub</code>.</p>
<button class="primary" type="submit">Sign in</button>
</form>
{{template "bottom" .}}{{end}}
{{define "consent"}}{{template "top" .}}
<h1>Allow {{.AppName}} to use this health record?</h1>
<p>The app <strong>{{.AppName}}</strong> ({{.AppHost}}) asks for access to:</p>
<div class="record"><p><strong>{{.PatientName}}</strong><br>{{.RecordBase}}</p></div>
<p>You are signed in as <strong>{{.Account}}</strong> ({{.Role}} of this record).</p>
{{if .Error}}<p class="error" role="alert">{{.Error}}</p>{{end}}
<form method="post" action="{{.Action}}">
<input type="hidden" name="request" value="{{.Request}}">
<input type="hidden" name="csrf" value="{{.CSRF}}">
<fieldset>
<legend>What the app may do (untick what you do not want to allow)</legend>
{{range .Scopes}}<label><input type="checkbox" name="scope" value="{{.Scope}}"{{if .Disabled}} disabled{{else}} checked{{end}}> {{.Label}} <span class="note">({{.Scope}}){{if .Disabled}}: your role cannot allow this{{end}}</span></label>
{{end}}</fieldset>
<p class="note">You can see and disconnect connected apps at any time; disconnecting ends the app's access at once.</p>
<button class="primary" type="submit" name="decision" value="approve">Allow</button>
<button type="submit" name="decision" value="deny">Deny</button>
</form>
{{template "bottom" .}}{{end}}
{{define "notmember"}}{{template "top" .}}
<h1>No access to this record</h1>
<p>You are signed in as <strong>{{.Account}}</strong>, who is not a member of the record at {{.RecordBase}}. Only its members can connect apps to it.</p>
<form method="post" action="{{.Action}}">
<input type="hidden" name="request" value="{{.Request}}">
<input type="hidden" name="csrf" value="{{.CSRF}}">
<button type="submit" name="decision" value="deny">Return to the app</button>
</form>
{{template "bottom" .}}{{end}}
{{define "error"}}{{template "top" .}}
<h1>{{.Title}}</h1>
<p class="error" role="alert">{{.Error}}</p>
<p>Nothing was shared. You can close this page.</p>
{{template "bottom" .}}{{end}}
`))

// page writes a server-rendered page with the headers that keep it from
// being framed (clickjacking) or cached.
func (s *Server) page(w http.ResponseWriter, status int, name string, data map[string]any) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	if err := pages.ExecuteTemplate(w, name, data); err != nil {
		s.log.Warn("rendering a page", zap.String("page", name), zap.Error(err))
	}
}

// errorPage tells the user, not the app, that a request is not valid: used
// when the app cannot be trusted with a redirect.
func (s *Server) errorPage(w http.ResponseWriter, status int, title, msg string) {
	s.page(w, status, "error", map[string]any{"Title": title, "Error": msg})
}
