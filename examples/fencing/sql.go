package fencing

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// MaxTableNameLen is the longest table name NewSQLStore accepts.
const MaxTableNameLen = 63

// SQLStore keeps values in a SQL table, each row with the fence of its last
// write. It is safe for concurrent use.
type SQLStore struct {
	db     *sql.DB
	create string
	write  string
	read   string
}

// NewSQLStore returns a store in the table named table of db. The name must
// be an identifier: an ASCII letter or '_', then letters, digits or '_', at
// most MaxTableNameLen bytes. It fails with an error wrapping ErrInvalid for
// a nil db or a bad name. It makes no database call; see CreateTable.
func NewSQLStore(db *sql.DB, table string) (*SQLStore, error) {
	if db == nil {
		return nil, invalidf("nil database")
	}
	if err := checkTable(table); err != nil {
		return nil, err
	}
	q := `"` + table + `"`
	return &SQLStore{
		db: db,
		create: `CREATE TABLE IF NOT EXISTS ` + q + ` (
	id    TEXT PRIMARY KEY,
	value BLOB NOT NULL,
	fence INTEGER NOT NULL
)`,
		// One statement checks the fence and writes. The WHERE clause of the
		// DO UPDATE makes the update conditional: a row with a higher fence
		// is left alone and counts as no affected row. Since the database
		// runs the statement under one lock on the row, no write can slip
		// in between the comparison and the update, as it could between a
		// SELECT of the fence and a later UPDATE.
		write: `INSERT INTO ` + q + ` (id, value, fence) VALUES (?, ?, ?)
ON CONFLICT (id) DO UPDATE SET value = excluded.value, fence = excluded.fence
WHERE excluded.fence >= ` + q + `.fence`,
		read: `SELECT value, fence FROM ` + q + ` WHERE id = ?`,
	}, nil
}

func checkTable(table string) error {
	if table == "" {
		return invalidf("empty table name")
	}
	if len(table) > MaxTableNameLen {
		return invalidf("table name of %d bytes, longer than %d", len(table), MaxTableNameLen)
	}
	for i := 0; i < len(table); i++ {
		c := table[i]
		letter := c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
		if !letter && (i == 0 || c < '0' || c > '9') {
			return invalidf("table name %q is not an identifier", table)
		}
	}
	return nil
}

// CreateTable creates the store's table if it does not exist.
func (s *SQLStore) CreateTable(ctx context.Context) error {
	if _, err := s.db.ExecContext(ctx, s.create); err != nil {
		return fmt.Errorf("create table: %w", err)
	}
	return nil
}

// Write stores value under id with fence in one statement, unless a higher
// fence has written id: then it changes nothing and returns an error
// wrapping ErrStaleFence. A fence equal to the stored one is accepted (the
// same grant writing again). An empty id or a fence that is not positive
// gets an error wrapping ErrInvalid.
func (s *SQLStore) Write(ctx context.Context, id string, value []byte, fence int64) error {
	return s.writeWith(ctx, s.db, id, value, fence)
}

// WriteTx is Write within the caller's transaction tx. On an error the
// caller should roll tx back; then a stale fence undoes the transaction's
// other writes as well. Once written, the row stays locked until tx ends, so
// no other write to it comes in between; making the fenced write the first
// of the transaction finds a stale fence before the other writes are done.
func (s *SQLStore) WriteTx(ctx context.Context, tx *sql.Tx, id string, value []byte, fence int64) error {
	if tx == nil {
		return invalidf("nil transaction")
	}
	return s.writeWith(ctx, tx, id, value, fence)
}

// execer is what *sql.DB and *sql.Tx share for Write.
type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

func (s *SQLStore) writeWith(ctx context.Context, db execer, id string, value []byte, fence int64) error {
	if err := checkWrite(id, fence); err != nil {
		return err
	}
	if value == nil {
		value = []byte{} // the column is NOT NULL; nil would bind as NULL
	}
	res, err := db.ExecContext(ctx, s.write, id, value, fence)
	if err != nil {
		return fmt.Errorf("write %q: %w", id, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("write %q: rows affected: %w", id, err)
	}
	if n == 0 {
		return stale(id, fence, "")
	}
	return nil
}

// Read returns the value stored under id and the fence that wrote it, or an
// error wrapping ErrNotFound if id was never written.
func (s *SQLStore) Read(ctx context.Context, id string) (value []byte, fence int64, err error) {
	if err := checkID(id); err != nil {
		return nil, 0, err
	}
	err = s.db.QueryRowContext(ctx, s.read, id).Scan(&value, &fence)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, 0, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read %q: %w", id, err)
	}
	return value, fence, nil
}
