/**
 * The schema, as migrations the service applies at boot (`migrate()` under its lock, so
 * several instances starting together migrate once). Kysely's schema builder writes the
 * DDL of each database; only the auto-increment key differs.
 */
import { type Kysely, type Migration, type MigrationProvider, sql } from 'kysely';
import type { Database } from 'sluice';
import type { DB } from './schema.js';

type Dialect = Database<DB>['dialect'];

function createTables(dialect: Dialect): Migration {
  // An integer key the database numbers: IDENTITY on PostgreSQL, AUTO_INCREMENT / AUTOINCREMENT elsewhere.
  const id = (table: ReturnType<Kysely<unknown>['schema']['createTable']>) =>
    dialect === 'postgres'
      ? table.addColumn('id', 'integer', (column) => column.primaryKey().generatedByDefaultAsIdentity())
      : table.addColumn('id', 'integer', (column) => column.primaryKey().autoIncrement());
  const now = sql`CURRENT_TIMESTAMP`;
  // A point in time: `timestamptz` on PostgreSQL (a plain `timestamp` would be read back in
  // Node's time zone, not the server's); DATETIME on MySQL (TIMESTAMP ends in 2038).
  const time = dialect === 'postgres' ? 'timestamptz' : 'datetime';
  return {
    async up(db: Kysely<unknown>) {
      await id(db.schema.createTable('authors'))
        .addColumn('name', 'varchar(100)', (column) => column.notNull())
        .addColumn('email', 'varchar(255)', (column) => column.notNull().unique())
        .addColumn('created_at', time, (column) => column.notNull().defaultTo(now))
        .execute();
      await id(db.schema.createTable('posts'))
        .addColumn('author_id', 'integer', (column) => column.notNull())
        .addColumn('title', 'varchar(200)', (column) => column.notNull())
        .addColumn('slug', 'varchar(200)', (column) => column.notNull().unique())
        .addColumn('body', 'text', (column) => column.notNull())
        .addColumn('comment_count', 'integer', (column) => column.notNull().defaultTo(0))
        .addColumn('created_at', time, (column) => column.notNull().defaultTo(now))
        .addForeignKeyConstraint('posts_author_fk', ['author_id'], 'authors', ['id'], (fk) => fk.onDelete('cascade'))
        .execute();
      await db.schema.createIndex('posts_author_idx').on('posts').column('author_id').execute();
      await id(db.schema.createTable('comments'))
        .addColumn('post_id', 'integer', (column) => column.notNull())
        .addColumn('commenter', 'varchar(100)', (column) => column.notNull())
        .addColumn('body', 'text', (column) => column.notNull())
        .addColumn('created_at', time, (column) => column.notNull().defaultTo(now))
        .addForeignKeyConstraint('comments_post_fk', ['post_id'], 'posts', ['id'], (fk) => fk.onDelete('cascade'))
        .execute();
      await db.schema.createIndex('comments_post_idx').on('comments').column('post_id').execute();
      await id(db.schema.createTable('tags'))
        .addColumn('name', 'varchar(50)', (column) => column.notNull().unique())
        .execute();
      await db.schema
        .createTable('post_tags')
        .addColumn('post_id', 'integer', (column) => column.notNull())
        .addColumn('tag_id', 'integer', (column) => column.notNull())
        .addPrimaryKeyConstraint('post_tags_pk', ['post_id', 'tag_id'])
        .addForeignKeyConstraint('post_tags_post_fk', ['post_id'], 'posts', ['id'], (fk) => fk.onDelete('cascade'))
        .addForeignKeyConstraint('post_tags_tag_fk', ['tag_id'], 'tags', ['id'], (fk) => fk.onDelete('cascade'))
        .execute();
      await db.schema.createIndex('post_tags_tag_idx').on('post_tags').column('tag_id').execute();
    },
    async down(db: Kysely<unknown>) {
      for (const table of ['post_tags', 'tags', 'comments', 'posts', 'authors']) await db.schema.dropTable(table).execute();
    },
  };
}

/** The migrations, in the order they apply, for `migrate(database, { provider })`. */
export function migrationProvider(dialect: Dialect): MigrationProvider {
  return {
    getMigrations: async () => ({ '2026_11_22_001_create_tables': createTables(dialect) }),
  };
}
