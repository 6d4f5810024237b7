/**
 * `/posts`: list (filtered by author or tag), read with author, comments and tags (one
 * query per relation, never one per row), create and update with their tags in one
 * transaction, delete; and `/posts/:id/comments`.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { Transaction } from 'kysely';
import { ForeignKeyViolationError, ModelNotFoundError, UniqueViolationError } from 'sluice';
import { Type } from 'typebox';
import type { ServiceContext } from '../context.js';
import { conflict, HttpError, notFound } from '../http-errors.js';
import type { Post } from '../models.js';
import { normalTag, normalTags, slugOf } from '../presentation.js';
import { inTransaction } from '../transactions.js';
import type { DB } from '../schema.js';
import { AuthorOut, CommentIn, CommentOut, ErrorOut, Id, IdParams, Page, PageQuery, PostOut, PostSummaryOut, Text } from './schemas.js';

const TagName = Type.String({ minLength: 1, maxLength: 50, pattern: '^[A-Za-z0-9][A-Za-z0-9 _.-]*$' });
const Tags = Type.Array(TagName, { maxItems: 10 });
const PostIn = Type.Object({ authorId: Id, title: Text(200), body: Text(50_000), tags: Type.Optional(Tags) }, { additionalProperties: false });
const PostPatch = Type.Object({ title: Type.Optional(Text(200)), body: Type.Optional(Text(50_000)), tags: Type.Optional(Tags) }, { additionalProperties: false, minProperties: 1 });
const PostListQuery = Type.Object({ ...PageQuery.properties, authorId: Type.Optional(Id), tag: Type.Optional(TagName) });
const PostListItem = Type.Object({ ...PostSummaryOut.properties, author: Type.Union([AuthorOut, Type.Null()]), tags: Type.Array(Type.String()) });
const PostDetailOut = Type.Object({ ...PostOut.properties, author: Type.Union([AuthorOut, Type.Null()]), tags: Type.Array(Type.String()), comments: Type.Array(CommentOut) });
const PostWrittenOut = Type.Object({ ...PostOut.properties, tags: Type.Array(Type.String()) });

/** A title's slug, which must have something in it: `!!!` has no letter or digit to make a URL of. */
function slugFor(title: string): string {
  const slug = slugOf(title);
  if (slug === '') throw new HttpError(400, 'body/title must contain a letter or a digit (it names the post in URLs).');
  return slug;
}

/** The named tags (normalised), creating those that do not exist yet. */
async function ensureTags(trx: Transaction<DB>, dialect: ServiceContext['database']['dialect'], names: readonly string[]): Promise<Array<{ id: number; name: string }>> {
  const unique = normalTags(names);
  if (unique.length === 0) return [];
  const insert = trx.insertInto('tags').values(unique.map((name) => ({ name })));
  // A tag another request creates at the same moment is not an error: it is the same tag.
  await (dialect === 'mysql' ? insert.ignore() : insert.onConflict((oc) => oc.column('name').doNothing())).execute();
  const select = trx.selectFrom('tags').select(['id', 'name']).where('name', 'in', unique);
  // MySQL's default isolation (REPEATABLE READ) reads from the snapshot of the transaction's
  // first read, which misses a tag another request committed since (the INSERT IGNORE above
  // skipped it as a duplicate all the same). A locking read sees the latest committed rows.
  const rows = await (dialect === 'mysql' ? select.forUpdate() : select).execute();
  if (rows.length !== unique.length) {
    throw new Error(`Expected tags ${unique.join(', ')} after creating them, found ${rows.map((row) => row.name).join(', ')}.`);
  }
  return rows;
}

/** Links the post to exactly these tags (ids from `ensureTags`). */
async function linkTags(trx: Transaction<DB>, postId: number, ids: readonly number[]): Promise<void> {
  await trx.deleteFrom('post_tags').where('post_id', '=', postId).execute();
  if (ids.length > 0) await trx.insertInto('post_tags').values(ids.map((tagId) => ({ post_id: postId, tag_id: tagId }))).execute();
}

async function unlessSlugTaken<T>(slug: string, write: () => Promise<T>): Promise<T> {
  try {
    return await write();
  } catch (error) {
    if (error instanceof UniqueViolationError) throw conflict(`A post with the slug "${slug}" already exists: choose another title.`);
    throw error;
  }
}

const tagNames = (post: { readonly tags: ReadonlyArray<{ readonly name: string }> }): string[] => post.tags.map((tag) => tag.name).sort();

export const postRoutes: FastifyPluginAsyncTypebox<ServiceContext> = async (app, { database, authors, posts, comments }) => {
  const { db, dialect } = database;

  app.get('/posts', { schema: { querystring: PostListQuery, response: { 200: Page(PostListItem) } } }, async (request) => {
    const { limit, after, authorId, tag } = request.query;
    // Three queries (the posts, their authors, their tags) on one connection: when the pool
    // is busy, the request waits for a connection once, not once per query.
    const rows = await database.withConnection(() =>
      posts
        .query((qb) => {
          let query = qb.where('id', '>', after);
          if (authorId !== undefined) query = query.where('author_id', '=', authorId);
          if (tag !== undefined) {
            const tagged = db.selectFrom('post_tags').innerJoin('tags', 'tags.id', 'post_tags.tag_id').select('post_tags.post_id').where('tags.name', '=', normalTag(tag));
            query = query.where('id', 'in', tagged);
          }
          return query.orderBy('id').limit(limit + 1);
        })
        .with('author')
        .with('tags')
        .execute(),
    );
    const page = rows.slice(0, limit);
    return {
      items: page.map((post) => ({ ...post.summary(), author: post.author?.toJSON() ?? null, tags: tagNames(post) })),
      next: rows.length > limit ? page[page.length - 1]!.id : null,
    };
  });

  app.get('/posts/:id', { schema: { params: IdParams, response: { 200: PostDetailOut, 404: ErrorOut } } }, async (request) => {
    // Four queries on one connection (see GET /posts).
    const [post] = await database.withConnection(() =>
      posts.query((qb) => qb.where('id', '=', request.params.id)).with('author').with('tags').with('comments').execute(),
    );
    if (post === undefined) throw notFound(`Post ${request.params.id}`);
    return {
      ...post.toJSON(),
      author: post.author?.toJSON() ?? null,
      tags: tagNames(post),
      comments: [...post.comments].sort((a, b) => a.id - b.id).map((comment) => comment.toJSON()),
    };
  });

  // Three tables in one transaction: the tags, the post, the links between them. Any
  // failure (a taken slug, a deadline, a client gone) leaves none of it behind.
  app.post('/posts', { schema: { body: PostIn, response: { 201: PostWrittenOut, 400: ErrorOut, 409: ErrorOut } } }, async (request, reply) => {
    const { authorId, title, body } = request.body;
    const slug = slugFor(title);
    const written = await inTransaction(database, async (trx) => {
      if ((await authors.find(authorId)) === undefined) throw new HttpError(400, `body/authorId: there is no author ${authorId}.`);
      const tags = await ensureTags(trx, dialect, request.body.tags ?? []);
      const post: Post = await unlessSlugTaken(slug, () => posts.insert({ author_id: authorId, title, slug, body }));
      await linkTags(trx, post.id, tags.map((tag) => tag.id));
      return { ...post.toJSON(), tags: tags.map((tag) => tag.name).sort() };
    });
    return reply.code(201).send(written);
  });

  app.patch('/posts/:id', { schema: { params: IdParams, body: PostPatch, response: { 200: PostWrittenOut, 400: ErrorOut, 404: ErrorOut, 409: ErrorOut } } }, async (request) => {
    const { title, body, tags } = request.body;
    return inTransaction(database, async (trx) => {
      const [post] = await posts.query((qb) => qb.where('id', '=', request.params.id)).with('tags').execute();
      if (post === undefined) throw notFound(`Post ${request.params.id}`);
      if (title !== undefined) {
        post.title = title;
        post.slug = slugFor(title);
      }
      if (body !== undefined) post.body = body;
      await unlessSlugTaken(post.slug, () => posts.update(post)).catch((error: unknown) => {
        throw error instanceof ModelNotFoundError ? notFound(`Post ${request.params.id}`) : error;
      });
      if (tags === undefined) return { ...post.toJSON(), tags: tagNames(post) };
      const current = await ensureTags(trx, dialect, tags);
      await linkTags(trx, post.id, current.map((tag) => tag.id));
      return { ...post.toJSON(), tags: current.map((tag) => tag.name).sort() };
    });
  });

  app.delete('/posts/:id', { schema: { params: IdParams, response: { 204: Type.Null(), 404: ErrorOut } } }, async (request, reply) => {
    const { numDeletedRows } = await db.deleteFrom('posts').where('id', '=', request.params.id).executeTakeFirst();
    if (numDeletedRows === 0n) throw notFound(`Post ${request.params.id}`);
    return reply.code(204).send(null);
  });

  app.get('/posts/:id/comments', { schema: { params: IdParams, querystring: PageQuery, response: { 200: Page(CommentOut), 404: ErrorOut } } }, async (request) => {
    const { limit, after } = request.query;
    const rows = await database.withConnection(async () => {
      const page = await comments.query((qb) => qb.where('post_id', '=', request.params.id).where('id', '>', after).orderBy('id').limit(limit + 1)).execute();
      if (page.length === 0 && (await posts.find(request.params.id)) === undefined) throw notFound(`Post ${request.params.id}`);
      return page;
    });
    const page = rows.slice(0, limit);
    return { items: page.map((comment) => comment.toJSON()), next: rows.length > limit ? page[page.length - 1]!.id : null };
  });

  // Two tables in one transaction: the comment, and the post's comment count.
  app.post('/posts/:id/comments', { schema: { params: IdParams, body: CommentIn, response: { 201: CommentOut, 404: ErrorOut } } }, async (request, reply) => {
    const postId = request.params.id;
    const comment = await inTransaction(database, async (trx) => {
      const written = await comments.insert({ post_id: postId, commenter: request.body.commenter, body: request.body.body }).catch((error: unknown) => {
        throw error instanceof ForeignKeyViolationError ? notFound(`Post ${postId}`) : error;
      });
      const { numUpdatedRows } = await trx.updateTable('posts').set((eb) => ({ comment_count: eb('comment_count', '+', 1) })).where('id', '=', postId).executeTakeFirst();
      if (numUpdatedRows === 0n) throw notFound(`Post ${postId}`);
      return written;
    });
    return reply.code(201).send(comment.toJSON());
  });
};
