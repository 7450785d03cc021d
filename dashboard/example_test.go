package dashboard_test

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/graflow-go/taskqueue"
	"github.com/graflow-go/taskqueue/dashboard"
)

// basicAuth lets a request through only with the user and password given; the dashboard leaves authentication to
// the application, which wraps it in its middleware like this one.
func basicAuth(user, password string, next http.Handler) http.Handler {
	wantUser, wantPass := sha256.Sum256([]byte(user)), sha256.Sum256([]byte(password))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		gotUser, gotPass := sha256.Sum256([]byte(u)), sha256.Sum256([]byte(p))
		if !ok || subtle.ConstantTimeCompare(gotUser[:], wantUser[:])&subtle.ConstantTimeCompare(gotPass[:], wantPass[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Basic realm="taskqueue", charset="UTF-8"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// An application mounts the dashboard under a path of its own, behind HTTP basic auth.
func Example_basicAuth() {
	mr, err := miniredis.Run()
	if err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	q, err := taskqueue.NewRedisTaskQueue(rdb, "billing", taskqueue.NewResolverRegistry(), nil)
	if err != nil {
		panic(err)
	}
	admin, err := taskqueue.NewAdmin(q) // a *taskqueue.ShardedQueue works the same
	if err != nil {
		panic(err)
	}
	schedules, err := taskqueue.NewSchedules(q)
	if err != nil {
		panic(err)
	}

	dash, err := dashboard.New(dashboard.Config{
		Queues:   []dashboard.Queue{{Admin: admin, Schedules: schedules}},
		BasePath: "/ops/queues",
		Logger:   slog.New(slog.DiscardHandler),
	})
	if err != nil {
		panic(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/ops/queues/", basicAuth("ops", "correct horse battery staple", dash))
	srv := httptest.NewServer(mux) // in production: an http.Server with TLS
	defer srv.Close()

	for _, withPassword := range []bool{false, true} {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/ops/queues/", nil)
		if withPassword {
			req.SetBasicAuth("ops", "correct horse battery staple")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			panic(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		fmt.Println(resp.Status)
	}
	// Output:
	// 401 Unauthorized
	// 200 OK
}
