import { DummyDriver, Kysely, PostgresAdapter, PostgresIntrospector, PostgresQueryCompiler, MysqlAdapter, MysqlIntrospector, MysqlQueryCompiler, sql } from 'kysely';
import { describe, expect, test } from 'vitest';
import { readTables, writtenTables } from '../../src/orm/cache/query-tables.js';

interface DB {
  users: { id: number; name: string; team_id: number };
  posts: { id: number; user_id: number; title: string };
  teams: { id: number; name: string };
  audit: { id: number; note: string };
}

const pg = new Kysely<DB>({
  dialect: {
    createAdapter: () => new PostgresAdapter(),
    createDriver: () => new DummyDriver(),
    createIntrospector: (db) => new PostgresIntrospector(db),
    createQueryCompiler: () => new PostgresQueryCompiler(),
  },
});
const mysql = new Kysely<DB>({
  dialect: {
    createAdapter: () => new MysqlAdapter(),
    createDriver: () => new DummyDriver(),
    createIntrospector: (db) => new MysqlIntrospector(db),
    createQueryCompiler: () => new MysqlQueryCompiler(),
  },
});

describe('tables a SELECT reads', () => {
  test('from, joins, aliases, subqueries in where and select, CTEs, unions', () => {
    const query = pg
      .with('recent', (db) => db.selectFrom('posts').select(['user_id']).where('id', '>', 10))
      .selectFrom('users as u')
      .innerJoin('teams', 'teams.id', 'u.team_id')
      .select((eb) => ['u.id', eb.selectFrom('audit').select(eb.fn.countAll().as('n')).as('audits')])
      .where('u.id', 'in', (eb) => eb.selectFrom('recent').select('user_id'))
      .union(pg.selectFrom('users').select(['id', sql<number>`0`.as('audits')]));
    const found = readTables(query.compile().query);
    // 'recent' is the CTE's name: an extra tag only, never bumped by a write.
    expect(found.tables).toEqual(['audit', 'posts', 'recent', 'teams', 'users']);
    expect(found.opaque).toBe(false);
    expect(found.writes).toBe(false);
  });

  test('a column qualified by an alias adds no tag of the alias', () => {
    const found = readTables(pg.selectFrom('users as u').select('u.name').where('u.id', '=', 1).compile().query);
    expect(found.tables).toEqual(['users']);
  });

  test('schema-qualified tables are tagged by their own name', () => {
    expect(readTables(pg.withSchema('app').selectFrom('users').selectAll().compile().query).tables).toEqual(['users']);
  });

  test('a raw query, or a raw fragment reading a table, is opaque; a harmless fragment is not', () => {
    expect(readTables(sql`SELECT * FROM users`.compile(pg).query).opaque).toBe(true);
    const fragment = pg.selectFrom('users').selectAll().where(sql<boolean>`id IN (SELECT user_id FROM posts)`);
    expect(readTables(fragment.compile().query)).toMatchObject({ tables: ['users'], opaque: true });
    const harmless = pg.selectFrom('users').select(sql<number>`count(*)`.as('n')).where(sql<boolean>`name ILIKE ${'a%'}`);
    expect(readTables(harmless.compile().query)).toEqual({ tables: ['users'], opaque: false, writes: false });
    // sql.table inside a fragment is seen.
    expect(readTables(sql`SELECT 1 FROM ${sql.table('teams')}`.compile(pg).query).tables).toEqual(['teams']);
  });

  test('a query naming no table has no tags', () => {
    expect(readTables(pg.selectNoFrom(sql<number>`1`.as('one')).compile().query).tables).toEqual([]);
  });

  test('parameter values are not walked (a value shaped like a node is data)', () => {
    const sneaky = { kind: 'TableNode', table: { identifier: { name: 'secret' } } };
    const found = readTables(pg.selectFrom('users').selectAll().where('name', '=', sneaky as unknown as string).compile().query);
    expect(found.tables).toEqual(['users']);
  });

  test('a data-modifying WITH makes it a write', () => {
    const query = pg.with('gone', (db) => db.deleteFrom('audit').returning('id')).selectFrom('gone').selectAll();
    expect(readTables(query.compile().query).writes).toBe(true);
  });
});

describe('tables a write changes', () => {
  test('insert, update, delete: their target only', () => {
    expect(writtenTables(pg.insertInto('users').values({ id: 1, name: 'a', team_id: 1 }).compile().query)).toEqual(['users']);
    expect(writtenTables(pg.updateTable('users').set({ name: 'b' }).where('id', '=', 1).compile().query)).toEqual(['users']);
    expect(writtenTables(pg.deleteFrom('posts').where('id', '=', 1).compile().query)).toEqual(['posts']);
  });

  test('INSERT ... SELECT: the source is read, not written', () => {
    const query = pg.insertInto('audit').columns(['id', 'note']).expression((db) => db.selectFrom('users').select(['id', 'name as note']));
    expect(writtenTables(query.compile().query)).toEqual(['audit']);
  });

  test("PostgreSQL UPDATE ... FROM and DELETE ... USING: the joined tables are only read", () => {
    const update = pg.updateTable('users').from('teams').set({ name: 'x' }).whereRef('users.team_id', '=', 'teams.id');
    expect(writtenTables(update.compile().query)).toEqual(['users']);
    const remove = pg.deleteFrom('posts').using('users').whereRef('posts.user_id', '=', 'users.id');
    expect(writtenTables(remove.compile().query)).toEqual(['posts']);
  });

  test('MySQL multi-table UPDATE and DELETE: each target', () => {
    const update = mysql.updateTable(['users', 'teams']).set('users.name', 'x').whereRef('users.team_id', '=', 'teams.id');
    expect([...(writtenTables(update.compile().query) ?? [])].sort()).toEqual(['teams', 'users']);
    const remove = mysql.deleteFrom(['users', 'posts']).using('users').innerJoin('posts', 'posts.user_id', 'users.id');
    expect([...(writtenTables(remove.compile().query) ?? [])].sort()).toEqual(['posts', 'users']);
  });

  test('MERGE: its target', () => {
    const merge = pg.mergeInto('users').using('teams', 'teams.id', 'users.team_id').whenMatched().thenDelete();
    expect(writtenTables(merge.compile().query)).toEqual(['users']);
  });

  test('a write inside a SELECT WITH is found', () => {
    const query = pg.with('gone', (db) => db.deleteFrom('audit').returning('id')).selectFrom('gone').selectAll();
    expect(writtenTables(query.compile().query)).toEqual(['audit']);
  });

  test('reads, DDL and raw SQL are not writes sluice can see', () => {
    expect(writtenTables(pg.selectFrom('users').selectAll().compile().query)).toBeUndefined();
    expect(writtenTables(pg.with('x', (db) => db.selectFrom('users').selectAll()).selectFrom('x').selectAll().compile().query)).toBeUndefined();
    expect(writtenTables(sql`UPDATE users SET name = 'x'`.compile(pg).query)).toBeUndefined();
    expect(writtenTables(pg.schema.createTable('t').addColumn('id', 'integer').compile().query)).toBeUndefined();
  });
});
