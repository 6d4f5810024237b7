/**
 * The service's tables, as Kysely sees them: authors write posts, posts have comments and,
 * through `post_tags`, tags. `created_at` is filled by the database.
 */
import type { ColumnType, Generated } from 'kysely';

/** Set by the database, never written by the service: a Date (PostgreSQL, MySQL) or text (SQLite). */
type CreatedAt = ColumnType<Date | string, never, never>;

export interface DB {
  authors: { id: Generated<number>; name: string; email: string; created_at: CreatedAt };
  posts: {
    id: Generated<number>;
    author_id: number;
    title: string;
    slug: string;
    body: string;
    comment_count: Generated<number>;
    created_at: CreatedAt;
  };
  comments: { id: Generated<number>; post_id: number; commenter: string; body: string; created_at: CreatedAt };
  tags: { id: Generated<number>; name: string };
  post_tags: { post_id: number; tag_id: number };
}
