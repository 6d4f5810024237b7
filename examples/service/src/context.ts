/** What every route is given: the database and the repositories of the service's models. */
import { type Database, models, type Repository } from 'sluice';
import { Author, Comment, Post, Tag } from './models.js';
import type { DB } from './schema.js';

export interface ServiceContext {
  readonly database: Database<DB>;
  readonly authors: Repository<typeof Author>;
  readonly posts: Repository<typeof Post>;
  readonly comments: Repository<typeof Comment>;
  readonly tags: Repository<typeof Tag>;
}

export function serviceContext(database: Database<DB>): ServiceContext {
  return { database, ...models(database, { authors: Author, posts: Post, comments: Comment, tags: Tag }) };
}
