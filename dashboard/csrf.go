package dashboard

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"net/http"
)

// CSRF protection of the actions, two layers:
//   - http.CrossOriginProtection refuses a browser's cross-origin POST by its Sec-Fetch-Site or Origin header;
//   - a token: a random cookie (HttpOnly, SameSite=Strict) and, in every form, the HMAC of the cookie under the
//     dashboard's key. A POST passes only with a cookie and a form token that is its HMAC. A page on another site
//     can neither read the cookie nor compute the HMAC; one that manages to plant a cookie (a sibling subdomain)
//     still cannot compute the token for it.

const (
	csrfCookie = "taskqueue_dashboard_csrf"
	csrfField  = "csrf"
)

type csrf struct {
	key  []byte
	path string // the cookie's path: the dashboard's base path
}

// token returns the form token of the request, setting a fresh cookie when it has none (or a malformed one).
func (c csrf) token(w http.ResponseWriter, r *http.Request) string {
	if ck, err := r.Cookie(csrfCookie); err == nil && validCookie(ck.Value) {
		return c.sign(ck.Value)
	}
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	v := hex.EncodeToString(b)
	http.SetCookie(w, &http.Cookie{Name: csrfCookie, Value: v, Path: c.path, HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	return c.sign(v)
}

func validCookie(v string) bool {
	b, err := hex.DecodeString(v)
	return err == nil && len(b) == 16
}

func (c csrf) sign(cookie string) string {
	m := hmac.New(sha256.New, c.key)
	m.Write([]byte(cookie))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// protect lets a POST reach h only with a valid token, from the same origin; others get 403.
func (c csrf) protect(h http.Handler) http.Handler {
	check := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
		ck, err := r.Cookie(csrfCookie)
		if err != nil || !validCookie(ck.Value) {
			http.Error(w, "forbidden: missing CSRF cookie (reload the page)", http.StatusForbidden)
			return
		}
		if !hmac.Equal([]byte(r.PostFormValue(csrfField)), []byte(c.sign(ck.Value))) {
			http.Error(w, "forbidden: bad CSRF token (reload the page)", http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
	return http.NewCrossOriginProtection().Handler(check)
}
