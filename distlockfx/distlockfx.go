package distlockfx

import (
	"fmt"
	"reflect"
	"strconv"

	"github.com/redis/go-redis/v9"
	"go.uber.org/fx"

	"github.com/distlock/distlock/middleware"
	"github.com/distlock/distlock/mutex"
	"github.com/distlock/distlock/registry"
)

// Module provides the application's *registry.Registry, which holds the
// configurations that Lock, LockFrom and Inherit register, and closes it
// when the application stops. It needs no other type; the Lockers need a
// redis.UniversalClient.
var Module = fx.Module("distlock", fx.Provide(newRegistry))

func newRegistry(lc fx.Lifecycle) *registry.Registry {
	r := registry.New()
	lc.Append(fx.StopHook(r.Close))
	return r
}

// Lock registers cfg under name, with registry.Register, on the
// application's redis.UniversalClient, and provides the resulting
// mutex.Locker tagged `name:"<name>"`. The configuration is built when the
// application starts, whether or not anything asks for it, so a bad Config
// fails fx.New.
func Lock(name string, cfg mutex.Config, decorators ...middleware.Middleware) fx.Option {
	if err := checkName(name); err != nil {
		return fx.Error(err)
	}
	return provide(name, fx.Annotate(
		func(r *registry.Registry, client redis.UniversalClient) (mutex.Locker, error) {
			return register(r, name, func() error { return r.Register(name, client, cfg, decorators...) })
		},
		fx.ResultTags(nameTag(name)),
	))
}

var configType = reflect.TypeFor[mutex.Config]()

// LockFrom is Lock with the Config made by constructor, an fx constructor
// that returns a mutex.Config, or a mutex.Config and an error, and takes
// whatever it needs from the application, such as its own configuration:
//
//	distlockfx.LockFrom("orders", func(s Settings) mutex.Config {
//		return mutex.Config{Prefix: s.LockPrefix, TTL: s.LockTTL}
//	})
//
// An error from constructor fails fx.New.
func LockFrom(name string, constructor any, decorators ...middleware.Middleware) fx.Option {
	if err := checkName(name); err != nil {
		return fx.Error(err)
	}
	ft := reflect.TypeOf(constructor)
	if ft == nil || ft.Kind() != reflect.Func || ft.NumOut() == 0 || ft.Out(0) != configType {
		return fx.Error(fmt.Errorf("%w: constructor for lock configuration %q is a %T, want a function returning a mutex.Config", mutex.ErrInvalid, name, constructor))
	}
	tag := strconv.Quote("distlockfx.config." + name)
	return fx.Options(
		fx.Provide(fx.Annotate(constructor, fx.ResultTags(`name:`+tag)), fx.Private),
		provide(name, fx.Annotate(
			func(r *registry.Registry, client redis.UniversalClient, cfg mutex.Config) (mutex.Locker, error) {
				return register(r, name, func() error { return r.Register(name, client, cfg, decorators...) })
			},
			fx.ParamTags("", "", `name:`+tag),
			fx.ResultTags(nameTag(name)),
		)),
	)
}

// Inherit registers name as a child of the configuration parent, with
// registry.Inherit, and provides its mutex.Locker tagged `name:"<name>"`.
// The parent is the mutex.Locker tagged `name:"<parent>"`, from Lock,
// LockFrom or another Inherit, which fx then builds first. As with
// registry.Inherit, override changes a copy of the parent's Config, and the
// child inherits the parent's decorators, which its own wrap.
func Inherit(name, parent string, override func(*mutex.Config), decorators ...middleware.Middleware) fx.Option {
	if err := checkName(name); err != nil {
		return fx.Error(err)
	}
	if parent == "" {
		return fx.Error(fmt.Errorf("%w: empty parent name for lock configuration %q", mutex.ErrInvalid, name))
	}
	return provide(name, fx.Annotate(
		func(r *registry.Registry, _ mutex.Locker) (mutex.Locker, error) {
			return register(r, name, func() error { return r.Inherit(name, parent, override, decorators...) })
		},
		fx.ParamTags("", nameTag(parent)),
		fx.ResultTags(nameTag(name)),
	))
}

// provide provides constructor, the Locker of name, and asks for it when
// the application starts.
func provide(name string, constructor any) fx.Option {
	return fx.Options(
		fx.Provide(constructor),
		fx.Invoke(fx.Annotate(func(mutex.Locker) {}, fx.ParamTags(nameTag(name)))),
	)
}

// register runs add and returns the Locker it registered.
func register(r *registry.Registry, name string, add func() error) (mutex.Locker, error) {
	if err := add(); err != nil {
		return nil, err
	}
	return r.Get(name)
}

func checkName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty lock configuration name", mutex.ErrInvalid)
	}
	return nil
}

// nameTag returns the fx tag of the value named name.
func nameTag(name string) string {
	return `name:` + strconv.Quote(name)
}
