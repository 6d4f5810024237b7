/**
 * `/posts`: list (filtered by author or tag), read with author, comments and tags (one
 * query per relation, never one per row), create and update with their tags in one
 * transaction, delete; and `/posts/:id/comments`.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { Transaction } from 'kysely';
import { ForeignKeyViolationError, UniqueViolationError } from 'sluice';
import { Type } from 'typebox';
import type { ServiceContext } from '../context.js';
import { conflict, HttpError, notFound } from '../http-errors.js';
import { type Post, slugOf } from '../models.js';
import type { DB } from '../schema.js';
import { AuthorOut, CommentOut, ErrorOut, IdParams, Page, PageQuery, PostOut, PostSummaryOut, Text } from './schemas.js';

const TagName = Type.String({ minLength: 1, maxLength: 50, pattern: '^[A-Za-z0-9][A-Za-z0-9 _.-]*$' });
const Tags = Type.Array(TagName, { maxItems: 10 });
const PostIn = Type.Object({ authorId: Type.Integer({ minimum: 1 }), title: Text(200), body: Text(50_000), tags: Type.Optional(Tags) }, { additionalProperties: false });
const PostPatch = Type.Object({ title: Type.Optional(Text(200)), body: Type.Optional(Text(50_000)), tags: Type.Optional(Tags) }, { additionalProperties: false, minProperties: 1 });
const PostListQuery = Type.Object({ ...PageQuery.properties, authorId: Type.Optional(Type.Integer({ minimum: 1 })), tag: Type.Optional(TagName) });
const PostListItem = Type.Object({ ...PostSummaryOut.properties, author: Type.Union([AuthorOut, Type.Null()]), tags: Type.Array(Type.String()) });
const PostDetailOut = Type.Object({ ...PostOut.properties, author: Type.Union([AuthorOut, Type.Null()]), tags: Type.Array(Type.String()), comments: Type.Array(CommentOut) });
const PostWrittenOut = Type.Object({ ...PostOut.properties, tags: Type.Array(Type.String()) });
const CommentIn = Type.Object({ commenter: Text(100), body: Text(5_000) }, { additionalProperties: false });

/** A title's slug, which must have something in it: `!!!` has no letter or digit to make a URL of. */
function slugFor(title: string): string {
  const slug = slugOf(title);
  if (slug === '') throw new HttpError(400, 'body/title must contain a letter or a digit.');
  return slug;
}

/** The ids of the named tags, creating those that do not exist yet (tag names are lower case). */
async function tagIds(trx: Transaction<DB>, dialect: ServiceContext['database']['dialect'], names: readonly string[]): Promise<number[]> {
  const unique = normalTags(names);
  if (unique.length === 0) return [];
  const insert = trx.insertInto('tags').values(unique.map((name) => ({ name })));
  // A tag another request creates at the same moment is not an error: it is the same tag.
  await (dialect === 'mysql' ? insert.ignore() : insert.onConflict((oc) => oc.column('name').doNothing())).execute();
  const rows = await trx.selectFrom('tags').select('id').where('name', 'in', unique).execute();
  return rows.map((row) => row.id);
}

/** Links the post to exactly these tags (ids from `tagIds`). */
async function linkTags(trx: Transaction<DB>, postId: number, ids: readonly number[]): Promise<void> {
  await trx.deleteFrom('post_tags').where('post_id', '=', postId).execute();
  if (ids.length > 0) await trx.insertInto('post_tags').values(ids.map((tagId) => ({ post_id: postId, tag_id: tagId }))).execute();
}

const normalTags = (names: readonly string[]): string[] => [...new Set(names.map((name) => name.trim().toLowerCase()))].sort();

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
    const rows = await posts
      .query((qb) => {
        let query = qb.where('id', '>', after);
        if (authorId !== undefined) query = query.where('author_id', '=', authorId);
        if (tag !== undefined) {
          const tagged = db.selectFrom('post_tags').innerJoin('tags', 'tags.id', 'post_tags.tag_id').select('post_tags.post_id').where('tags.name', '=', tag.toLowerCase());
          query = query.where('id', 'in', tagged);
        }
        return query.orderBy('id').limit(limit + 1);
      })
      .with('author')
      .with('tags')
      .execute();
    const page = rows.slice(0, limit);
    return {
      items: page.map((post) => ({ ...post.summary(), author: post.author?.toJSON() ?? null, tags: tagNames(post) })),
      next: rows.length > limit ? page[page.length - 1]!.id : null,
    };
  });

  app.get('/posts/:id', { schema: { params: IdParams, response: { 200: PostDetailOut, 404: ErrorOut } } }, async (request) => {
    const [post] = await posts.query((qb) => qb.where('id', '=', request.params.id)).with('author').with('tags').with('comments').execute();
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
    const tags = normalTags(request.body.tags ?? []);
    const written = await database.transaction(async (trx) => {
      if ((await authors.find(authorId)) === undefined) throw new HttpError(400, `body/authorId: there is no author ${authorId}.`);
      const ids = await tagIds(trx, dialect, tags);
      const post: Post = await unlessSlugTaken(slug, () => posts.insert({ author_id: authorId, title, slug, body }));
      await linkTags(trx, post.id, ids);
      return { ...post.toJSON(), tags };
    });
    return reply.code(201).send(written);
  });

  app.patch('/posts/:id', { schema: { params: IdParams, body: PostPatch, response: { 200: PostWrittenOut, 400: ErrorOut, 404: ErrorOut, 409: ErrorOut } } }, async (request) => {
    const { title, body, tags } = request.body;
    return database.transaction(async (trx) => {
      const [post] = await posts.query((qb) => qb.where('id', '=', request.params.id)).with('tags').execute();
      if (post === undefined) throw notFound(`Post ${request.params.id}`);
      if (title !== undefined) {
        post.title = title;
        post.slug = slugFor(title);
      }
      if (body !== undefined) post.body = body;
      await unlessSlugTaken(post.slug, () => posts.update(post));
      if (tags === undefined) return { ...post.toJSON(), tags: tagNames(post) };
      await linkTags(trx, post.id, await tagIds(trx, dialect, tags));
      return { ...post.toJSON(), tags: normalTags(tags) };
    });
  });

  app.delete('/posts/:id', { schema: { params: IdParams, response: { 204: Type.Null(), 404: ErrorOut } } }, async (request, reply) => {
    const { numDeletedRows } = await db.deleteFrom('posts').where('id', '=', request.params.id).executeTakeFirst();
    if (numDeletedRows === 0n) throw notFound(`Post ${request.params.id}`);
    return reply.code(204).send(null);
  });

  app.get('/posts/:id/comments', { schema: { params: IdParams, querystring: PageQuery, response: { 200: Page(CommentOut), 404: ErrorOut } } }, async (request) => {
    const { limit, after } = request.query;
    const rows = await comments.query((qb) => qb.where('post_id', '=', request.params.id).where('id', '>', after).orderBy('id').limit(limit + 1)).execute();
    if (rows.length === 0 && (await posts.find(request.params.id)) === undefined) throw notFound(`Post ${request.params.id}`);
    const page = rows.slice(0, limit);
    return { items: page.map((comment) => comment.toJSON()), next: rows.length > limit ? page[page.length - 1]!.id : null };
  });

  // Two tables in one transaction: the comment, and the post's comment count.
  app.post('/posts/:id/comments', { schema: { params: IdParams, body: CommentIn, response: { 201: CommentOut, 404: ErrorOut } } }, async (request, reply) => {
    const postId = request.params.id;
    const comment = await database.transaction(async (trx) => {
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
