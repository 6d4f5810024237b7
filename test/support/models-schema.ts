/**
 * The schema and models the model tests, the type tests, the README examples and
 * bench/models.ts share: users have posts, posts have comments and (through a join table)
 * tags, and belong to their author.
 */
import { type Generated, sql } from 'kysely';
import type { Database } from '../../src/orm/connect.js';
import { belongsTo, defineModels, hasMany, manyToMany } from '../../src/orm/model/index.js';

export interface DB {
  sluice_model_users: { id: Generated<number>; name: string; email: string; age: number; bio: string | null };
  sluice_model_posts: { id: Generated<number>; user_id: number; title: string; views: Generated<number> };
  sluice_model_comments: { id: Generated<number>; post_id: number; body: string };
  sluice_model_tags: { id: Generated<number>; label: string };
  sluice_model_post_tags: { post_id: number; tag_id: number };
}

const Model = defineModels<DB>();

export class User extends Model('sluice_model_users') {
  static readonly relations = {
    posts: hasMany(() => Post, { foreignKey: 'user_id' }),
  };

  get displayName(): string {
    return `${this.name} <${this.email}>`;
  }

  isAdult(): boolean {
    return this.age >= 18;
  }
}

export class Post extends Model('sluice_model_posts') {
  static readonly relations = {
    author: belongsTo(() => User, { foreignKey: 'user_id' }),
    comments: hasMany(() => Comment, { foreignKey: 'post_id' }),
    tags: manyToMany(() => Tag, { through: 'sluice_model_post_tags', from: 'post_id', to: 'tag_id' }),
  };

  get slug(): string {
    return this.title.toLowerCase().replace(/[^a-z0-9]+/g, '-');
  }
}

export class Comment extends Model('sluice_model_comments') {
  static readonly relations = {
    post: belongsTo(() => Post, { foreignKey: 'post_id' }),
  };
}

export class Tag extends Model('sluice_model_tags') {}

export type Dialect = 'postgres' | 'mysql' | 'sqlite';

const TABLES = ['sluice_model_post_tags', 'sluice_model_comments', 'sluice_model_posts', 'sluice_model_tags', 'sluice_model_users'];

/** Drops and creates the tables (empty). */
export async function createSchema(database: Database<DB>, dialect: Dialect): Promise<void> {
  await dropSchema(database);
  const id =
    dialect === 'postgres'
      ? sql.raw('id serial PRIMARY KEY')
      : dialect === 'mysql'
        ? sql.raw('id int AUTO_INCREMENT PRIMARY KEY')
        : sql.raw('id integer PRIMARY KEY AUTOINCREMENT');
  const db = database.db;
  await sql`CREATE TABLE sluice_model_users (${id}, name varchar(100) NOT NULL, email varchar(200) NOT NULL, age int NOT NULL, bio varchar(500))`.execute(db);
  await sql`CREATE TABLE sluice_model_posts (${id}, user_id int NOT NULL, title varchar(200) NOT NULL, views int NOT NULL DEFAULT 0)`.execute(db);
  await sql`CREATE TABLE sluice_model_comments (${id}, post_id int NOT NULL, body varchar(500) NOT NULL)`.execute(db);
  await sql`CREATE TABLE sluice_model_tags (${id}, label varchar(100) NOT NULL)`.execute(db);
  await sql`CREATE TABLE sluice_model_post_tags (post_id int NOT NULL, tag_id int NOT NULL, PRIMARY KEY (post_id, tag_id))`.execute(db);
  await sql`CREATE INDEX sluice_model_posts_user ON sluice_model_posts (user_id)`.execute(db);
  await sql`CREATE INDEX sluice_model_comments_post ON sluice_model_comments (post_id)`.execute(db);
}

export async function dropSchema(database: Database<DB>): Promise<void> {
  for (const table of TABLES) await sql`DROP TABLE IF EXISTS ${sql.table(table)}`.execute(database.db);
}

/** Empties the tables between tests. */
export async function clearTables(database: Database<DB>): Promise<void> {
  for (const table of TABLES) await sql`DELETE FROM ${sql.table(table)}`.execute(database.db);
}
