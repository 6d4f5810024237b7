/**
 * A child process of `bench:service`: the baseline the example service is compared with.
 * The same benched route, `GET /posts/:id`, as examples/service serves it (same URL, same
 * params and response schemas, so the same validation and serializer; same JSON; the same
 * four queries, one after the other, each on a connection of its own as sluice's eager
 * loading runs them), built on plain Kysely over its own `PostgresDialect` and a
 * `pg.Pool` of `POOL_MAX` connections. No deadline, no load shedding: a request waits in
 * pg.Pool's queue for as long as it takes. That is the point of the comparison.
 *
 * Env as the service's main.ts: DATABASE_URL (postgres://), PORT (0 = a free one), HOST,
 * POOL_MAX (default 10), LOG_LEVEL (default warn). Prints
 * `baseline: listening on http://HOST:PORT`. Stops on SIGTERM/SIGINT.
 */
import { type TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import Fastify from 'fastify';
import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import { Type } from 'typebox';
import { AuthorOut, CommentOut, ErrorOut, IdParams, PostOut } from '../examples/service/src/routes/schemas.js';
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

app.get('/posts/:id', { schema: { params: IdParams, response: { 200: PostDetailOut, 404: ErrorOut } } }, async (request, reply) => {
  const id = request.params.id;
  // The statements sluice's model layer sends for `posts.query(...).with('author').with('tags').with('comments')`.
  const post = await db.selectFrom('posts').selectAll('posts').where('id', '=', id).executeTakeFirst();
  if (post === undefined) return reply.code(404).send({ statusCode: 404, error: 'Not Found', message: `Post ${id} was not found.` });
  const authors = await db.selectFrom('authors').selectAll().where('id', 'in', [post.author_id]).orderBy('id').execute();
  const tags = await db
    .selectFrom('tags')
    .innerJoin('post_tags', 'post_tags.tag_id', 'tags.id')
    .selectAll('tags')
    .select('post_tags.post_id as __sluice_parent_key')
    .where('post_tags.post_id', 'in', [post.id])
    .orderBy('tags.id')
    .execute();
  const comments = await db.selectFrom('comments').selectAll().where('post_id', 'in', [post.id]).orderBy('id').execute();
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

let closing: Promise<void> | undefined;
const shutdown = (): Promise<void> => (closing ??= app.close().then(() => db.destroy()).then(() => process.exit(0)));
process.once('SIGTERM', () => void shutdown());
process.once('SIGINT', () => void shutdown());

await app.listen({ host, port });
const address = app.server.address();
console.log(`baseline: listening on http://${host}:${typeof address === 'object' && address !== null ? address.port : port} (Kysely PostgresDialect over pg.Pool max ${poolMax})`);
