"""File search: parse documents, chunk them, embed the chunks, and fuse keyword and vector rankings.

Everything here is plain synchronous code over bytes, text and numpy arrays: no database, no event
loop. The service layer runs it in worker threads and keeps the index in the store.
"""
