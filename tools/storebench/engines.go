package main

import (
	"bytes"
	"errors"
	"io"

	"github.com/cockroachdb/pebble/v2"
	"github.com/dgraph-io/badger/v4"
	bolt "go.etcd.io/bbolt"
)

// op is one write of an atomic batch: a put, or a delete when del is set.
type op struct {
	key, val []byte
	del      bool
}

// engine is the least the workload needs from a key-value store. commit is
// atomic and, when sync is set, durable before it returns; it must be safe to
// call from many goroutines, using whatever group commit the engine has.
type engine interface {
	commit(ops []op, sync bool) error
	// scan calls fn for up to limit keys with prefix, in key order, from one
	// consistent view, and then get for each value fn asks for through
	// the same view.
	scan(prefix []byte, limit int, fn func(k, v []byte, get func([]byte) ([]byte, error))) error
	close() error
}

// openers names each candidate. "bolt-batch" is bbolt with its own group
// commit (DB.Batch) instead of one transaction per call.
var openers = map[string]func(dir string) (engine, error){
	"pebble":      openPebble,
	"bbolt":       func(dir string) (engine, error) { return openBolt(dir, false) },
	"bbolt-batch": func(dir string) (engine, error) { return openBolt(dir, true) },
	"badger":      openBadger,
}

// ---- pebble ----

type pebbleEngine struct{ db *pebble.DB }

func openPebble(dir string) (engine, error) {
	// Defaults are 4 MiB memtables and an 8 MiB cache, sized for many
	// stores per process; give it what badger takes by default (64 MiB
	// memtables) and a cache, and the newest on-disk format.
	cache := pebble.NewCache(64 << 20)
	defer cache.Unref()
	db, err := pebble.Open(dir, &pebble.Options{
		Logger:             quietLogger{},
		Cache:              cache,
		MemTableSize:       64 << 20,
		FormatMajorVersion: pebble.FormatNewest,
	})
	if err != nil {
		return nil, err
	}
	return &pebbleEngine{db}, nil
}

func (e *pebbleEngine) commit(ops []op, sync bool) error {
	b := e.db.NewBatch()
	defer b.Close()
	for _, o := range ops {
		if o.del {
			b.Delete(o.key, nil)
		} else {
			b.Set(o.key, o.val, nil)
		}
	}
	wo := pebble.NoSync
	if sync {
		wo = pebble.Sync
	}
	return b.Commit(wo)
}

func (e *pebbleEngine) scan(prefix []byte, limit int, fn func(k, v []byte, get func([]byte) ([]byte, error))) error {
	snap := e.db.NewSnapshot()
	defer snap.Close()
	it, err := snap.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return err
	}
	defer it.Close()
	get := func(k []byte) ([]byte, error) {
		v, c, err := snap.Get(k)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		return bytes.Clone(v), nil
	}
	n := 0
	for it.First(); it.Valid() && n < limit; it.Next() {
		fn(it.Key(), it.Value(), get)
		n++
	}
	return it.Error()
}

func (e *pebbleEngine) close() error { return e.db.Close() }

type quietLogger struct{}

func (quietLogger) Infof(string, ...any)  {}
func (quietLogger) Errorf(string, ...any) {}
func (quietLogger) Fatalf(format string, args ...any) {
	panic(errors.New("pebble fatal"))
}

// ---- bbolt ----

// boltEngine keeps one bucket per key kind (the first byte), so that the
// sequential message keys and the random inbox keys do not share pages.
type boltEngine struct {
	db    *bolt.DB
	batch bool
}

func openBolt(dir string, batch bool) (engine, error) {
	db, err := bolt.Open(dir+"/bolt.db", 0o600, &bolt.Options{FreelistType: bolt.FreelistMapType})
	if err != nil {
		return nil, err
	}
	return &boltEngine{db, batch}, nil
}

func (e *boltEngine) commit(ops []op, sync bool) error {
	// bbolt has no unsynced commit short of NoSync on the whole DB; the
	// workload only asks for unsynced writes when loading data.
	e.db.NoSync = !sync
	f := func(tx *bolt.Tx) error {
		for _, o := range ops {
			b, err := tx.CreateBucketIfNotExists(o.key[:1])
			if err != nil {
				return err
			}
			if o.del {
				err = b.Delete(o.key[1:])
			} else {
				err = b.Put(o.key[1:], o.val)
			}
			if err != nil {
				return err
			}
		}
		return nil
	}
	if e.batch && sync {
		return e.db.Batch(f)
	}
	return e.db.Update(f)
}

func (e *boltEngine) scan(prefix []byte, limit int, fn func(k, v []byte, get func([]byte) ([]byte, error))) error {
	return e.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(prefix[:1])
		if b == nil {
			return nil
		}
		get := func(k []byte) ([]byte, error) {
			bk := tx.Bucket(k[:1])
			if bk == nil {
				return nil, io.EOF
			}
			v := bk.Get(k[1:])
			if v == nil {
				return nil, io.EOF
			}
			return bytes.Clone(v), nil
		}
		c := b.Cursor()
		p := prefix[1:]
		n := 0
		for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p) && n < limit; k, v = c.Next() {
			fn(append(prefix[:1:1], k...), v, get)
			n++
		}
		return nil
	})
}

func (e *boltEngine) close() error { return e.db.Close() }

// ---- badger ----

type badgerEngine struct{ sync *badger.DB }

func openBadger(dir string) (engine, error) {
	// Badger fixes SyncWrites per DB, so unsynced loading goes through the
	// same DB and simply pays the fsync; there is one DB.
	db, err := badger.Open(badger.DefaultOptions(dir).WithSyncWrites(true).WithLogger(nil))
	if err != nil {
		return nil, err
	}
	return &badgerEngine{sync: db}, nil
}

func (e *badgerEngine) commit(ops []op, sync bool) error {
	// One transaction per call: it is atomic, and badger's write channel
	// groups concurrent commits into one fsync. (WriteBatch would split a
	// large batch into several transactions, which the store cannot use.)
	return e.sync.Update(func(txn *badger.Txn) error {
		for _, o := range ops {
			var err error
			if o.del {
				err = txn.Delete(o.key)
			} else {
				err = txn.Set(o.key, o.val)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
}

func (e *badgerEngine) scan(prefix []byte, limit int, fn func(k, v []byte, get func([]byte) ([]byte, error))) error {
	return e.sync.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = prefix
		opts.PrefetchValues = false
		it := txn.NewIterator(opts)
		defer it.Close()
		get := func(k []byte) ([]byte, error) {
			item, err := txn.Get(k)
			if err != nil {
				return nil, err
			}
			return item.ValueCopy(nil)
		}
		n := 0
		for it.Seek(prefix); it.ValidForPrefix(prefix) && n < limit; it.Next() {
			item := it.Item()
			v, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			fn(item.Key(), v, get)
			n++
		}
		return nil
	})
}

func (e *badgerEngine) close() error { return e.sync.Close() }

// prefixEnd returns the smallest key greater than every key with prefix p.
func prefixEnd(p []byte) []byte {
	end := bytes.Clone(p)
	for i := len(end) - 1; i >= 0; i-- {
		end[i]++
		if end[i] != 0 {
			return end[:i+1]
		}
	}
	return nil
}
