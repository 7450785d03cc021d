package taskqueue_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/graflow-go/taskqueue"
)

// With signing, the producer signs each envelope with its active key, and the worker verifies it before it
// resolves anything: a task written into Redis by anyone without the key is parked, never run.
func ExampleSigningConfig() {
	mr, err := miniredis.Run()
	if err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()

	ref := taskqueue.NewReferenceResolver()
	taskqueue.MustRegister(ref, "billing", "charge", func(_ context.Context, cents int) error {
		fmt.Println("charging", cents)
		return nil
	})
	reg := taskqueue.NewResolverRegistry()
	reg.MustRegister(taskqueue.DefaultResolverID, ref)

	// In production the keys are random and come from a secret store (taskqueue.LoadSigningKeysFile).
	signing := &taskqueue.SigningConfig{
		Keys:        map[string][]byte{"2024-06": bytes.Repeat([]byte("k"), taskqueue.MinSigningKeyBytes)},
		ActiveKeyID: "2024-06",
	}
	q, err := taskqueue.NewRedisTaskQueue(rdb, "billing", reg, &taskqueue.RedisConfig{Signing: signing})
	if err != nil {
		panic(err)
	}
	unsigned, err := taskqueue.NewRedisTaskQueue(rdb, "billing", reg, nil) // a producer without the key
	if err != nil {
		panic(err)
	}

	ctx := context.Background()
	if err := q.Enqueue(ctx, taskqueue.NewTaskSpec("signed", taskqueue.Ref("billing", "charge", 100))); err != nil {
		panic(err)
	}
	if err := unsigned.Enqueue(ctx, taskqueue.NewTaskSpec("forged", taskqueue.Ref("billing", "charge", 1000000))); err != nil {
		panic(err)
	}
	admin, err := taskqueue.NewAdmin(q)
	if err != nil {
		panic(err)
	}
	signed, err := admin.Inspect(ctx, "signed")
	if err != nil {
		panic(err)
	}
	var stored struct {
		Sig struct {
			Alg string `json:"alg"`
			Kid string `json:"kid"`
		} `json:"sig"`
	}
	if err := json.Unmarshal([]byte(signed.Envelope), &stored); err != nil {
		panic(err)
	}
	fmt.Println("signed with", stored.Sig.Alg, stored.Sig.Kid)

	ds, err := q.Dequeue(ctx, taskqueue.DequeueOptions{Max: 10})
	if err != nil {
		panic(err)
	}
	for _, d := range ds {
		if err := d.Spec.Executable.Run(ctx); err != nil {
			panic(err)
		}
		if err := q.Ack(ctx, d); err != nil {
			panic(err)
		}
	}
	dl, err := admin.Inspect(ctx, "forged")
	if err != nil {
		panic(err)
	}
	fmt.Println(dl.State, "parked:", dl.Reason)

	_, err = taskqueue.NewRedisTaskQueue(rdb, "billing", reg, &taskqueue.RedisConfig{Signing: &taskqueue.SigningConfig{
		Keys: map[string][]byte{"short": []byte("secret")}, ActiveKeyID: "short",
	}})
	fmt.Println(errors.Is(err, taskqueue.ErrInvalidConfig), err)
	// Output:
	// signed with HS256 2024-06
	// charging 100
	// dead parked: taskqueue: task signature refused: the task is not signed
	// true taskqueue: invalid configuration: Signing.Keys: key "short" is 6 bytes, want 32 to 1024
}
