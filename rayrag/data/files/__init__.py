"""Document files in: one parser per format (PDF, HTML, DOCX, Markdown/text), each a plain
function `bytes -> ParsedFile` keeping the file's structure (heading paths, pages) as spans
over its text; `parse.py` picks one by sniffed content, `reader.py` reads a folder or an
s3:// prefix (on Ray Data or in-process) into validated `Document`s.
"""
