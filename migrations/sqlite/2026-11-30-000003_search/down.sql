DROP TABLE search_index;
DROP TABLE search_docs;
DROP TABLE search_progress;
