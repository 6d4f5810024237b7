/**
 * A child process of `bench:service`: the baseline the example service is compared with.
 * The same benched routes as examples/service serves them (same URLs, same params, body
 * and response schemas, so the same validation and serializer; same JSON), built on plain
 * Kysely over its own `PostgresDialect` and a `pg.Pool` of `POOL_MAX` connections:
 * - `GET /posts/:id`: the same four queries, one after the other, each on a connection of
 *   its own as sluice's eager loading runs them;
 * - `POST /posts/:id/comments`: one transaction (BEGIN; INSERT ... RETURNING *; UPDATE
 *   posts SET comment_count = comment_count + 1; COMMIT, as the service's route sends
 *   them), a 404 when the post does not exist (the insert's foreign key, or no row
 *   updated), run again up to 3 times in all on a deadlock or serialization failure as
 *   the service's inTransaction does.
 * No deadline, no load shedding: a request waits in pg.Pool's queue for as long as it
 * takes. That is the point of the comparison.
 *
 * Env as the service's main.ts: DATABASE_URL (postgres://), PORT (0 = a free one), HOST,
 * POOL_MAX (default 10), LOG_LEVEL (default warn). Prints
 * `baseline: listening on http://HOST:PORT`. Stops on SIGTERM/SIGINT.
 */
import { type TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import Fastify from 'fastify';
import { Kysely, PostgresDialect, type Transaction } from 'kysely';
import pg from 'pg';
import { Type } from 'typebox';
import { AuthorOut, CommentIn, CommentOut, ErrorOut, IdParams, PostOut } from '../examples/service/src/routes/schemas.js';
import type { DB } from '../examples/service/src/schema.js';
import { excerptOf, isoTime } from '../examples/service/src/presentation.js';

// As examples/service/src/routes/posts.ts builds it.
const PostDetailOut = Type.Object({ ...PostOut.properties, author: Type.Union([AuthorOut, Type.Null()]), tags: Type.Array(Type.String()), comments: Type.Array(CommentOut) });

const databaseUrl = process.env['DATABASE_URL'];
if (databaseUrl === undefined || !/^postgres(ql)?:/.test(databaseUrl)) throw new Error('baseline: DATABASE_URL must be a postgres:// URL.');
const host = process.env['HOST'] || '127.0.0.1';
const port = Number(process.env['PORT'] || 0);
const poolMax = Number(process.env['POOL_MAX'] || 10);

const db = new Kysely<DB>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: databaseUrl, max: poolMax }) }) });

const app = Fastify({ logger: { level: process.env['LOG_LEVEL'] || 'warn' } }).withTypeProvider<TypeBoxTypeProvider>();

/** The service's notFound(): its 404 body. */
const notFound = (postId: number) => ({ statusCode: 404, error: 'Not Found', message: `Post ${postId} was not found.` });

app.get('/posts/:id', { schema: { params: IdParams, response: { 200: PostDetailOut, 404: ErrorOut } } }, async (request, reply) => {
  const id = request.params.id;
  // The statements sluice's model layer sends for `posts.query(...).with('author').with('tags').with('comments')`,
  // on one connection as the service runs them (`database.withConnection`): Kysely's own way to do that.
  const found = await db.connection().execute(async (conn) => {
    const post = await conn.selectFrom('posts').selectAll('posts').where('id', '=', id).executeTakeFirst();
    if (post === undefined) return undefined;
    const authors = await conn.selectFrom('authors').selectAll().where('id', 'in', [post.author_id]).orderBy('id').execute();
    const tags = await conn
      .selectFrom('tags')
      .innerJoin('post_tags', 'post_tags.tag_id', 'tags.id')
      .selectAll('tags')
      .select('post_tags.post_id as __sluice_parent_key')
      .where('post_tags.post_id', 'in', [post.id])
      .orderBy('tags.id')
      .execute();
    const comments = await conn.selectFrom('comments').selectAll().where('post_id', 'in', [post.id]).orderBy('id').execute();
    return { post, authors, tags, comments };
  });
  if (found === undefined) return reply.code(404).send(notFound(id));
  const { post, authors, tags, comments } = found;
  const author = authors[0];
  return {
    id: post.id,
    authorId: post.author_id,
    title: post.title,
    slug: post.slug,
    excerpt: excerptOf(post.body),
    commentCount: Number(post.comment_count),
    createdAt: isoTime(post.created_at),
    body: post.body,
    author: author === undefined ? null : { id: author.id, name: author.name, email: author.email, createdAt: isoTime(author.created_at) },
    tags: tags.map((tag) => tag.name).sort(),
    comments: comments.map((comment) => ({ id: comment.id, postId: comment.post_id, commenter: comment.commenter, body: comment.body, createdAt: isoTime(comment.created_at) })),
  };
});

/** Thrown inside the transaction to roll it back and answer 404. */
class PostNotFound extends Error {}

/** SQLSTATEs the service's inTransaction runs again (sluice's retryable PostgreSQL errors). */
const RETRYABLE = new Set(['40P01', '40001']);
const sqlState = (error: unknown): unknown => (error as { code?: unknown } | null)?.code;

async function inTransaction<T>(work: (trx: Transaction<DB>) => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await db.transaction().execute(work);
    } catch (error) {
      if (!RETRYABLE.has(sqlState(error) as string) || attempt === 3) throw error;
    }
  }
}

// Two tables in one transaction: the comment, and the post's comment count (as the service's route).
app.post('/posts/:id/comments', { schema: { params: IdParams, body: CommentIn, response: { 201: CommentOut, 404: ErrorOut } } }, async (request, reply) => {
  const postId = request.params.id;
  try {
    const comment = await inTransaction(async (trx) => {
      const written = await trx
        .insertInto('comments')
        .values({ post_id: postId, commenter: request.body.commenter, body: request.body.body })
        .returningAll()
        .executeTakeFirstOrThrow()
        .catch((error: unknown) => {
          throw sqlState(error) === '23503' ? new PostNotFound() : error;
        });
      const { numUpdatedRows } = await trx.updateTable('posts').set((eb) => ({ comment_count: eb('comment_count', '+', 1) })).where('id', '=', postId).executeTakeFirst();
      if (numUpdatedRows === 0n) throw new PostNotFound();
      return written;
    });
    return reply.code(201).send({ id: comment.id, postId: comment.post_id, commenter: comment.commenter, body: comment.body, createdAt: isoTime(comment.created_at) });
  } catch (error) {
    if (error instanceof PostNotFound) return reply.code(404).send(notFound(postId));
    throw error;
  }
});

let closing: Promise<void> | undefined;
const shutdown = (): Promise<void> => (closing ??= app.close().then(() => db.destroy()).then(() => process.exit(0)));
process.once('SIGTERM', () => void shutdown());
process.once('SIGINT', () => void shutdown());

await app.listen({ host, port });
const address = app.server.address();
console.log(`baseline: listening on http://${host}:${typeof address === 'object' && address !== null ? address.port : port} (Kysely PostgresDialect over pg.Pool max ${poolMax})`);
