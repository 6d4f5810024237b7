/** `/authors`: list, create, read (with their posts), update, delete. */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { ModelNotFoundError, UniqueViolationError } from 'sluice';
import { Type } from 'typebox';
import type { ServiceContext } from '../context.js';
import { conflict, notFound } from '../http-errors.js';
import { AuthorOut, ErrorOut, IdParams, Page, PageQuery, PostSummaryOut, Text } from './schemas.js';

const Email = Type.String({ format: 'email', maxLength: 255 });
const AuthorIn = Type.Object({ name: Text(100), email: Email }, { additionalProperties: false });
const AuthorPatch = Type.Object({ name: Type.Optional(Text(100)), email: Type.Optional(Email) }, { additionalProperties: false, minProperties: 1 });
const AuthorWithPostsOut = Type.Object({ ...AuthorOut.properties, posts: Type.Array(PostSummaryOut) });

/** Addresses compare without case everywhere (MySQL's default collation already does). */
const normalEmail = (email: string): string => email.trim().toLowerCase();

async function unlessEmailTaken<T>(email: string, write: () => Promise<T>): Promise<T> {
  try {
    return await write();
  } catch (error) {
    if (error instanceof UniqueViolationError) throw conflict(`An author with the email ${email} already exists.`);
    throw error;
  }
}

export const authorRoutes: FastifyPluginAsyncTypebox<ServiceContext> = async (app, { database, authors }) => {
  app.get('/authors', { schema: { querystring: PageQuery, response: { 200: Page(AuthorOut) } } }, async (request) => {
    const { limit, after } = request.query;
    const rows = await authors.query((qb) => qb.where('id', '>', after).orderBy('id').limit(limit + 1)).execute();
    const page = rows.slice(0, limit);
    return { items: page.map((author) => author.toJSON()), next: rows.length > limit ? page[page.length - 1]!.id : null };
  });

  app.post('/authors', { schema: { body: AuthorIn, response: { 201: AuthorOut, 409: ErrorOut } } }, async (request, reply) => {
    const email = normalEmail(request.body.email);
    const author = await unlessEmailTaken(email, () => authors.insert({ name: request.body.name, email }));
    return reply.code(201).send(author.toJSON());
  });

  app.get('/authors/:id', { schema: { params: IdParams, response: { 200: AuthorWithPostsOut, 404: ErrorOut } } }, async (request) => {
    // Two queries (the author, their posts) on one connection: one wait for it, not two.
    const [author] = await database.withConnection(() => authors.query((qb) => qb.where('id', '=', request.params.id)).with('posts').execute());
    if (author === undefined) throw notFound(`Author ${request.params.id}`);
    return { ...author.toJSON(), posts: author.posts.map((post) => post.summary()) };
  });

  app.patch('/authors/:id', { schema: { params: IdParams, body: AuthorPatch, response: { 200: AuthorOut, 404: ErrorOut, 409: ErrorOut } } }, async (request) => {
    const author = await authors.find(request.params.id);
    if (author === undefined) throw notFound(`Author ${request.params.id}`);
    const { name, email } = request.body;
    if (name !== undefined) author.name = name;
    if (email !== undefined) author.email = normalEmail(email);
    await unlessEmailTaken(author.email, () => authors.update(author)).catch((error: unknown) => {
      // Deleted by another request between this one's read and its write.
      throw error instanceof ModelNotFoundError ? notFound(`Author ${request.params.id}`) : error;
    });
    return author.toJSON();
  });

  app.delete('/authors/:id', { schema: { params: IdParams, response: { 204: Type.Null(), 404: ErrorOut } } }, async (request, reply) => {
    // Their posts, and the posts' comments and tag links, go with them (ON DELETE CASCADE).
    const { numDeletedRows } = await database.db.deleteFrom('authors').where('id', '=', request.params.id).executeTakeFirst();
    if (numDeletedRows === 0n) throw notFound(`Author ${request.params.id}`);
    return reply.code(204).send(null);
  });
};
